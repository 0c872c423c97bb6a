"""Tests for fmnumpy.datasets: shapes, seeding, one statistic per distribution that
pins its FFJORD constants, and every load_data error. N samples, D dims."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmnumpy.euclidean import datasets as ds
from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError

TOY = ("2spirals", "8gaussians", "checkerboard", "moons", "pinwheel", "rings",
       "swissroll", "circles", "scurve")
DIMS = dict({name: 2 for name in TOY}, gmm8d=8, gmm32d=32)
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def draw(name, n=20000, seed=0):
    return ds.sample(name, n, np.random.default_rng(seed)).astype(np.float64)


def radius(x):
    return np.hypot(x[:, 0], x[:, 1])


# ---- shapes, dtype, seeding ---------------------------------------------------------

def test_registry_lists_every_dataset():
    assert set(ds.DATASETS) == set(DIMS)
    for name, dim in DIMS.items():
        assert ds.data_dim(name) == dim


@pytest.mark.parametrize("name", sorted(DIMS))
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 101, 1000])
def test_shape_dtype_finite(name, n):
    x = ds.sample(name, n, np.random.default_rng(n))
    assert x.shape == (n, DIMS[name]) and x.dtype == DTYPE
    assert np.isfinite(x).all()


@SETTINGS
@given(name=st.sampled_from(sorted(DIMS)), n=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_same_seed_same_draws_other_seed_other_draws(name, n, seed):
    a = ds.sample(name, n, np.random.default_rng(seed))
    b = ds.sample(name, n, seed)              # an int seed means default_rng(seed)
    c = ds.sample(name, n, seed + 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_global_random_state_untouched():
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    for name in DIMS:
        ds.sample(name, 50, 0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


# ---- one statistic per distribution ---------------------------------------------------

def test_8gaussians_modes_radius_angles_std():
    x = draw("8gaussians", 40000)
    angles = np.arange(8) * np.pi / 4
    centres = 4 / 1.414 * np.stack((np.cos(angles), np.sin(angles)), axis=1)   # (8, 2)
    k = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    for j in range(8):
        xj = x[k == j]
        assert abs(len(xj) / len(x) - 1 / 8) < 0.01
        np.testing.assert_allclose(xj.mean(0), centres[j], atol=0.02)
        np.testing.assert_allclose(xj.std(0), 0.5 / 1.414, atol=0.015)


def test_2spirals_second_moment_and_extent():
    # |x|^2 = (|d1|^2)/9 + noise; with s = 3 pi sqrt(u) (pdf 2s/(3pi)^2 on [0, 3pi]),
    # offsets a, b ~ U(0, 1/2): E|d1|^2 = E s^2 + 2 E[a] (E[s sin s] - E[s cos s]) + 2 E[a^2].
    s = np.linspace(0, 3 * np.pi, 200001)
    pdf = 2 * s / (3 * np.pi) ** 2
    e_sin, e_cos = np.trapezoid(s * np.sin(s) * pdf, s), np.trapezoid(s * np.cos(s) * pdf, s)
    expected = (9 * np.pi ** 2 / 2 + 0.5 * (e_sin - e_cos) + 2 / 12) / 9 + 2 * 0.1 ** 2
    x = draw("2spirals", 40000)
    assert abs((x ** 2).sum(1).mean() - expected) < 0.06
    np.testing.assert_allclose(x.mean(0), 0, atol=0.01)   # the arms are mirror images
    r = radius(x)
    # largest noise-free radius: (3 pi + |offset| <= 0.5 sqrt 2) / 3, plus noise
    assert np.pi - 0.1 < np.quantile(r, 0.999) and r.max() < np.pi + 0.24 + 0.5


def test_checkerboard_only_black_squares_evenly():
    x = draw("checkerboard", 40000)
    assert (x >= -4).all() and (x < 4).all()
    cell = np.floor(x / 2).astype(int) + 2                  # (N, 2) cell indices 0..3
    assert ((cell.sum(1) % 2) == 0).all()
    counts = np.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16)
    black = counts[counts > 0]
    assert len(black) == 8 and np.all(np.abs(black / len(x) - 1 / 8) < 0.01)


def test_rings_radii_counts_noise():
    n = 4001
    x = draw("rings", n)
    radii = np.array([3.0, 2.25, 1.5, 0.75])
    r = radius(x)
    k = np.argmin(np.abs(r[:, None] - radii[None]), axis=1)
    np.testing.assert_array_equal(np.bincount(k, minlength=4), [1000, 1000, 1000, 1001])
    for j, rad in enumerate(radii):
        assert abs(r[k == j].mean() - rad) < 0.012
        assert abs((r[k == j] - rad).std() - 0.08) < 0.01


def test_circles_radii_counts_noise():
    x = draw("circles", 20000)
    r = radius(x)
    outer = r > 2.25
    assert abs(outer.mean() - 0.5) < 0.01
    for mask, rad in ((outer, 3.0), (~outer, 1.5)):
        assert abs(r[mask].mean() - rad) < 0.03
        assert abs((r[mask] - rad).std() - 0.24) < 0.02


def test_moons_moments_and_arcs():
    x = draw("moons", 40000)
    # outer arc: centre (-1, -0.2), inner: centre (1, 0.8), radius 2, noise 0.2
    np.testing.assert_allclose(x.mean(0), [0.0, 0.3], atol=0.02)
    np.testing.assert_allclose((x ** 2).mean(0), [3.04, 2.34 - 4 / np.pi + 0.04], atol=0.05)
    d1 = np.abs(np.hypot(x[:, 0] + 1, x[:, 1] + 0.2) - 2)
    d2 = np.abs(np.hypot(x[:, 0] - 1, x[:, 1] - 0.8) - 2)
    assert np.quantile(np.minimum(d1, d2), 0.99) < 0.6
    assert (x[:, 0] > -4).all() and (x[:, 0] < 4).all()
    assert (x[:, 1] > -2.2).all() and (x[:, 1] < 2.8).all()


def test_pinwheel_five_arms_and_radius():
    x = draw("pinwheel", 20000)
    r = radius(x)
    assert abs(np.median(r) - 2.0) < 0.05            # 2 * radial mean 1
    # undo the radius-dependent twist 0.25 exp(r/2): what is left is the arm angle
    psi = np.arctan2(x[:, 1], x[:, 0]) + 0.25 * np.exp(r / 2)
    z = np.exp(5j * psi).mean()
    assert abs(z) > 0.8 and abs(np.angle(z)) < 0.05
    arm = np.round(-psi * 5 / (2 * np.pi)).astype(int) % 5
    counts = np.bincount(arm, minlength=5)
    assert np.all(np.abs(counts / len(x) - 0.2) < 0.01)
    resid = np.angle(np.exp(1j * (psi + 2 * np.pi * arm / 5)))
    assert np.mean(np.abs(resid) < 0.4) > 0.98


def test_swissroll_moments_and_range():
    x = draw("swissroll", 40000)
    # t = 1.5 pi (1 + 2u): E t^2 = (1.5 pi)^2 13/3, E t cos t = 2, E t sin t = 2/(3 pi)
    expected_r2 = (1.5 * np.pi) ** 2 * 13 / 3 / 25 + 2 / 25
    assert abs((x ** 2).sum(1).mean() - expected_r2) < 0.04
    np.testing.assert_allclose(x.mean(0), [2 / 5, 2 / (3 * np.pi) / 5], atol=0.02)
    r = radius(x)
    assert r.max() < 4.5 * np.pi / 5 + 1.0 and np.quantile(r, 0.001) > 1.5 * np.pi / 5 - 0.6


def test_scurve_moments_and_shape():
    """t uniform on [-3 pi / 2, 3 pi / 2]: E sin^2 t = 1/2, E cos t = -2 / (3 pi),
    so E x^2 = 1.5^2 (1/2 + s^2) and E z^2 = 1.5^2 (3/2 + 4 / (3 pi) + s^2), s = 0.05;
    and the noiseless S is within a few noise widths of every point."""
    x = draw("scurve", 40000) / 1.5
    s2 = 0.05 ** 2
    np.testing.assert_allclose((x ** 2).mean(0), [0.5 + s2, 1.5 + 4 / (3 * np.pi) + s2],
                               atol=0.02)
    np.testing.assert_allclose(x.mean(0), [0.0, 0.0], atol=0.02)
    t = np.linspace(-1.5 * np.pi, 1.5 * np.pi, 4001)
    curve = np.stack((np.sin(t), np.sign(t) * (np.cos(t) - 1)), axis=1)
    d = np.min(np.linalg.norm(x[:2000, None, :] - curve[None], axis=2), axis=1)
    assert np.quantile(d, 0.99) < 4 * 0.05 * np.sqrt(2)


@pytest.mark.parametrize("dim", [4, 8, 32])
def test_gmm_centres_closed_form(dim):
    c = ds.gmm_centres(dim)
    assert c.shape == (8, dim)
    gram = c @ c.T / 4.0 ** 2                    # +1 self, -1 partner, 0 otherwise
    np.testing.assert_allclose(gram, np.kron(np.eye(4), [[1, -1], [-1, 1]]), atol=1e-12)
    np.testing.assert_allclose(c[0], 4.0 / np.sqrt(dim))    # GMM_RADIUS = 4
    np.testing.assert_array_equal(c, ds.gmm_centres(dim))


def test_gmm_centres_fixed_values():
    c = ds.gmm_centres(8)
    assert abs(c[2, 0] - 4 * np.sqrt(2 / 8) * np.cos(np.pi / 16)) < 1e-12
    assert abs(c[2, 0] - 1.9615705608064609) < 1e-12
    with pytest.raises(FmnumpyError, match="modes"):
        ds.gmm_centres(2, n_modes=5)


@pytest.mark.parametrize("name,dim", [("gmm8d", 8), ("gmm32d", 32)])
def test_gmm_mode_means_and_std(name, dim):
    x = draw(name, 16000)
    c = ds.gmm_centres(dim)
    k = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    for j in range(8):
        xj = x[k == j]
        assert abs(len(xj) / len(x) - 1 / 8) < 0.015
        assert np.abs(xj.mean(0) - c[j]).max() < 0.06
        assert np.abs(xj.std(0) - 0.5).max() < 0.04        # GMM_STD


# ---- argument checks -------------------------------------------------------------------

def test_unknown_name_lists_valid_names():
    with pytest.raises(FmnumpyError) as e:
        ds.sample("spirals", 10, 0)
    for name in DIMS:
        assert name in str(e.value)
    with pytest.raises(FmnumpyError):
        ds.data_dim("nope")


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10", None])
def test_bad_n(n):
    with pytest.raises(FmnumpyError, match="positive int"):
        ds.sample("moons", n, 0)


@pytest.mark.parametrize("rng", [None, -1, 1.5, True, np.random.RandomState(0)])
def test_bad_rng(rng):
    with pytest.raises(FmnumpyError, match="Generator"):
        ds.sample("moons", 10, rng)


def test_numpy_int_n_and_seed_accepted():
    x = ds.sample("rings", np.int64(9), np.int32(3))
    np.testing.assert_array_equal(x, ds.sample("rings", 9, 3))


# ---- load_data ------------------------------------------------------------------------

def one_line_error(path, *needles):
    with pytest.raises(FmnumpyError) as e:
        ds.load_data(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


@SETTINGS
@given(n=st.integers(2, 40), d=st.integers(1, 5), seed=st.integers(0, 1000))
def test_load_round_trip_npy_and_csv(tmp_path_factory, n, d, seed):
    x = np.random.default_rng(seed).normal(scale=1e3, size=(n, d)).astype(DTYPE)
    folder = tmp_path_factory.mktemp("rt")
    np.save(folder / "x.npy", x)
    np.savetxt(folder / "x.csv", x, delimiter=",", fmt="%.9g")
    for name in ("x.npy", "x.csv"):
        y = ds.load_data(folder / name)
        assert y.dtype == DTYPE and y.flags.c_contiguous
        np.testing.assert_array_equal(y, x)


def test_load_csv_header_blank_lines_and_float64_npy(tmp_path):
    p = tmp_path / "d.CSV"
    p.write_text("x, y\n1, 2\n\n3,4\n")
    np.testing.assert_array_equal(ds.load_data(p), [[1, 2], [3, 4]])
    q = tmp_path / "d.npy"
    np.save(q, np.arange(6, dtype=np.int64).reshape(3, 2))
    np.testing.assert_array_equal(ds.load_data(q), [[0, 1], [2, 3], [4, 5]])


def test_load_missing_and_unsupported(tmp_path):
    one_line_error(tmp_path / "nope.csv", "no such file")
    p = tmp_path / "d.txt"
    p.write_text("1,2\n3,4\n")
    one_line_error(p, "unsupported", ".npy", ".csv")
    d = tmp_path / "dir.npy"
    d.mkdir()
    one_line_error(d, "not a regular file")


@pytest.mark.parametrize("text", ["", "\n\n", "x,y\n"])
def test_load_empty_csv(tmp_path, text):
    p = tmp_path / "e.csv"
    p.write_text(text)
    one_line_error(p, "empty")


def test_load_empty_npy(tmp_path):
    p = tmp_path / "e.npy"
    p.write_bytes(b"")
    one_line_error(p, "empty")


def test_load_ragged_csv_names_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,b\n1,2\n3,4\n5,6,7\n8,9\n")
    one_line_error(p, "line 4", "3 values")


def test_load_non_numeric_csv_names_line(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("1,2\n3,4\n5,x\n")
    one_line_error(p, "line 3", "'x'", "non-numeric")
    q = tmp_path / "m.csv"
    q.write_text("1,2\n3,\n")
    one_line_error(q, "line 2", "non-numeric")


def test_load_nonfinite_csv_names_line(tmp_path):
    p = tmp_path / "f.csv"
    p.write_text("1,2\n3,4\n\n5,nan\n6,inf\n")
    one_line_error(p, "line 4", "NaN")      # the blank line 3 still counts
    q = tmp_path / "big.csv"
    q.write_text("1,2\n3,1e40\n")
    one_line_error(q, "line 2", "float32")


def test_load_nonfinite_npy_names_row(tmp_path):
    x = np.zeros((5, 2))
    x[3, 1] = -np.inf
    p = tmp_path / "f.npy"
    np.save(p, x)
    one_line_error(p, "row 4", "inf")


@pytest.mark.parametrize("shape,needle", [((6,), "2-D"), ((2, 3, 1), "2-D"),
                                          ((4, 0), "2-D"), ((1, 3), "at least 2 rows"),
                                          ((0, 2), "at least 2 rows")])
def test_load_wrong_shape_npy(tmp_path, shape, needle):
    p = tmp_path / "s.npy"
    np.save(p, np.zeros(shape))
    one_line_error(p, needle)


def test_load_single_row_csv(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("x,y\n1,2\n")
    one_line_error(p, "at least 2 rows")


def test_load_unreadable_npy(tmp_path):
    p = tmp_path / "bad.npy"
    p.write_bytes(b"this is not a numpy file at all")
    one_line_error(p, "cannot be read", "numpy.save")
    q = tmp_path / "obj.npy"
    np.save(q, np.array([[1, "a"], [2, None]], dtype=object))
    one_line_error(q, "cannot be read")
    s = tmp_path / "str.npy"
    np.save(s, np.array([["a", "b"], ["c", "d"]]))
    one_line_error(s, "real numbers")


def test_load_binary_csv(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x81\x82")
    one_line_error(p, "not a text file")


# ---- make_sampler and data_dim ------------------------------------------------------------

def test_sampler_from_name_matches_sample():
    draw_fn = ds.make_sampler("circles")
    np.testing.assert_array_equal(draw_fn(17, 4), ds.sample("circles", 17, 4))


def test_sampler_from_array_draws_rows_with_replacement():
    data = np.arange(30, dtype=np.float64).reshape(10, 3)
    draw_fn = ds.make_sampler(data)
    x = draw_fn(500, np.random.default_rng(0))
    assert x.shape == (500, 3) and x.dtype == DTYPE
    rows = {tuple(r) for r in x.tolist()}
    assert rows == {tuple(r) for r in data.astype(DTYPE).tolist()}   # every row, nothing else
    np.testing.assert_array_equal(x, draw_fn(500, 0))
    assert not np.array_equal(x, draw_fn(500, 1))
    assert ds.data_dim(data) == 3
    data[:] = 0                                     # the sampler holds its own copy
    assert draw_fn(5, 0).any()


def test_sampler_from_path_and_bad_array(tmp_path):
    p = tmp_path / "d.npy"
    np.save(p, np.ones((4, 5)))
    assert ds.data_dim(str(p)) == 5 and ds.make_sampler(p)(3, 0).shape == (3, 5)
    with pytest.raises(FmnumpyError, match="row 2"):
        ds.make_sampler([[1.0, 2.0], [np.nan, 0.0]])
    with pytest.raises(FmnumpyError, match="2-D"):
        ds.make_sampler(np.ones(5))
    with pytest.raises(FmnumpyError, match="positive int"):
        ds.make_sampler(np.ones((3, 2)))(0, 0)


# ---- stratified sets drawn independently --------------------------------------------

COUNTS = {"moons": [1000, 1001], "pinwheel": [401, 400, 400, 400, 400],
          "rings": [500, 500, 500, 501], "circles": [1000, 1001]}


@pytest.mark.parametrize("name", ds.STRATIFIED)
def test_stratified_counts_fixed_independent_counts_multinomial(name):
    n, k = 2001, len(COUNTS[name])
    _, y = ds.sample(name, n, 0, labels=True)
    np.testing.assert_array_equal(np.bincount(y), COUNTS[name])
    counts = np.array([np.bincount(ds.sample(name, n, s, labels=True, stratified=False)[1],
                                   minlength=k) for s in range(40)])                  # (40, k)
    assert (counts.sum(1) == n).all()
    sd = np.sqrt(n * (1 / k) * (1 - 1 / k))                   # binomial sd of one count
    assert 0.6 * sd < counts.std() < 1.5 * sd
    assert abs(counts.mean() - n / k) < 0.5 * sd


@pytest.mark.parametrize("name", ["rings", "circles"])
def test_independent_angles_are_uniform_not_a_grid(name):
    def gaps(stratified):
        """Gaps between the sorted angles of the outer curve's points (about 10 of them,
        far apart next to the noise), in units of their mean, over 60 draws."""
        out = []
        for s in range(60):
            x, y = ds.sample(name, 40 if name == "rings" else 20, s, labels=True,
                             stratified=stratified)
            a = np.sort(np.arctan2(x[y == 0, 1], x[y == 0, 0]))
            g = np.diff(np.append(a, a[0] + 2 * np.pi))
            out.append(g / g.mean())
        return np.concatenate(out)
    # an even grid plus small noise: gaps near 1; uniform angles: about exponential (sd 1)
    assert gaps(True).std() < 0.3 and 0.75 < gaps(False).std() < 1.1


def test_independent_draws_keep_the_distribution():
    x = ds.sample("rings", 20000, 2, stratified=False).astype(np.float64)
    radii = np.array([3.0, 2.25, 1.5, 0.75])
    r = radius(x)
    k = np.argmin(np.abs(r[:, None] - radii[None]), axis=1)
    assert np.all(np.abs(np.bincount(k) / len(x) - 0.25) < 0.012)
    for j, rad in enumerate(radii):
        assert abs((r[k == j] - rad).std() - 0.08) < 0.01
    m = ds.sample("moons", 40000, 2, stratified=False).astype(np.float64)
    np.testing.assert_allclose(m.mean(0), [0.0, 0.3], atol=0.03)
    np.testing.assert_allclose((m ** 2).mean(0), [3.04, 2.34 - 4 / np.pi + 0.04], atol=0.06)


@pytest.mark.parametrize("name", ["2spirals", "8gaussians", "checkerboard", "swissroll"])
def test_stratified_flag_leaves_independent_sets_alone(name):
    np.testing.assert_array_equal(ds.sample(name, 500, 4, stratified=False),
                                  ds.sample(name, 500, 4))
