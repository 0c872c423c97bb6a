"""Tests for fmnumpy.couplings (minibatch OT, Sinkhorn, the registry) and the
extra probability paths of fmnumpy.paths.  B batch, D data dimension."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmnumpy.couplings import registry as cp
from fmnumpy.couplings import ot
from fmnumpy.euclidean.datasets import sample
from fmnumpy.errors import FmnumpyError
from fmnumpy.couplings.distances import sq_dists
from fmnumpy.euclidean.paths import SB_DENOM_EPS, cosine_path, sb_path

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def cost(x0, x1):
    return float(((np.asarray(x0, np.float64) - x1) ** 2).sum())


def batch(B, D=2, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((B, D)).astype(dtype)
    x1 = (rng.standard_normal((B, D)) * 0.5 + np.array([3.0] + [0.0] * (D - 1))).astype(dtype)
    return x0, x1


def row_permutation(a, b):
    """The permutation p with a == b[p] (rows distinct), or None."""
    p = [int(np.flatnonzero((b == r).all(1))[0]) if (b == r).all(1).any() else -1 for r in a]
    return p if sorted(p) == list(range(len(b))) else None


# ---- exact OT ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_ot_is_a_permutation_of_x0(dtype):
    x0, x1 = batch(64, D=3, dtype=dtype)
    y0, y1 = cp.exact_ot(x0, x1, np.random.default_rng(0))
    assert y0.dtype == dtype and y0.shape == x0.shape
    assert np.array_equal(y1, x1)                      # data order kept
    assert row_permutation(y0, x0) is not None         # no x0 duplicated or dropped


def test_exact_ot_beats_random_permutations():
    x0, x1 = batch(50, seed=1)
    y0, _ = cp.exact_ot(x0, x1)
    best = cost(y0, x1)
    rng = np.random.default_rng(2)
    assert all(best <= cost(x0[rng.permutation(50)], x1) + 1e-12 for _ in range(200))
    assert best < cost(x0, x1)


@SETTINGS
@given(B=st.integers(1, 7), D=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_exact_ot_matches_brute_force(B, D, seed):
    x0, x1 = batch(B, D, seed)
    y0, _ = cp.exact_ot(x0, x1)
    brute = min(cost(x0[list(p)], x1) for p in itertools.permutations(range(B)))
    assert cost(y0, x1) == pytest.approx(brute, rel=1e-12, abs=1e-12)


def test_exact_ot_of_a_shifted_batch_is_the_identity():
    x0, _ = batch(40, seed=3)
    y0, _ = cp.exact_ot(x0, x0 + np.array([0.1, -0.2]))
    assert np.array_equal(y0, x0)


def test_exact_ot_shortens_the_straight_paths():
    """The point of OT-CFM: the chords x1 - x0 get shorter on average."""
    rng = np.random.default_rng(4)
    x0, x1 = rng.standard_normal((2, 256, 2))
    y0, _ = cp.exact_ot(x0, x1)
    assert cost(y0, x1) < 0.5 * cost(x0, x1)


def test_exact_ot_chunk_matches_batch_by_batch():
    rng = np.random.default_rng(10)
    x0 = rng.standard_normal((5, 40, 2)).astype(np.float32)
    x1 = (rng.standard_normal((5, 40, 2)) + 2).astype(np.float32)
    y0, y1 = cp.exact_ot.chunk(x0, x1, None)
    assert cp.exact_ot.chunk is cp.exact_ot_chunk
    assert y1 is x1 and y0.dtype == np.float32
    for c in range(5):
        assert np.array_equal(y0[c], cp.exact_ot(x0[c], x1[c])[0])
    with pytest.raises(FmnumpyError, match="one shape"):
        cp.exact_ot_chunk(x0, x1[:, :30])


def scipy_optimum(x0, x1):
    """The optimal cost by scipy.optimize.linear_sum_assignment (second opinion),
    on the same float64 cost matrix the coupling builds."""
    optimize = pytest.importorskip("scipy.optimize")
    C = sq_dists(x1, x0)
    r, c = optimize.linear_sum_assignment(C)
    return C[r, c].sum(), c


def sorted_rows(a):
    """The rows of a (B, D) in lexicographic order (a multiset of points)."""
    return a[np.lexsort(a.T[::-1])]


def point_batches(B, seed):
    """(name, x0, x1) batches of B points: the toy sets against N(0, I), and
    degenerate ones: equal points, repeats, a line, huge and tiny scales, far
    apart clouds, 1-D and 5-D."""
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((B, 2))
    for name in ("2spirals", "moons", "checkerboard", "8gaussians", "circles"):
        yield name, x0.astype(np.float32), sample(name, B, rng)
    yield "all equal", np.ones((B, 2)), np.ones((B, 2))
    yield "x1 all equal", x0, np.full((B, 2), 0.5)
    few = rng.standard_normal((B // 8, 2))
    yield "repeats", np.repeat(x0[: B // 8], 8, 0), np.repeat(few, 8, 0)
    yield "integer grid", rng.integers(0, 3, (B, 2)) * 1.0, rng.integers(0, 3, (B, 2)) * 1.0
    yield "on a line", np.outer(rng.random(B), [1.0, 2.0]), np.outer(rng.random(B), [1.0, 2.0])
    yield "huge", x0 * 1e100, rng.standard_normal((B, 2)) * 1e100
    yield "tiny", x0 * 1e-100, rng.standard_normal((B, 2)) * 1e-100
    yield "far apart", x0, rng.standard_normal((B, 2)) + 1e6
    yield "1-D", rng.standard_normal((B, 1)), rng.standard_normal((B, 1)) * 3
    yield "5-D", rng.standard_normal((B, 5)), rng.standard_normal((B, 5)) + 1


@pytest.mark.parametrize("B", [16, 256])
def test_exact_ot_matches_scipy_optimum(B):
    """Optimal up to rounding on every kind of batch (ties, repeats, degenerate
    and extreme scales included), per batch and chunked."""
    for name, x0, x1 in point_batches(B, seed=B):
        y0, y1 = cp.exact_ot(x0, x1)
        assert np.array_equal(y1, x1), name
        assert np.array_equal(sorted_rows(y0), sorted_rows(x0)), name   # a permutation
        best, _ = scipy_optimum(x0, x1)
        ours = ((y0.astype(np.float64) - x1) ** 2).sum()
        assert ours == pytest.approx(best, rel=1e-12, abs=1e-300), name
        z0, _ = cp.exact_ot_chunk(x0[None], x1[None])
        assert np.array_equal(z0[0], y0), name


@pytest.mark.parametrize("dataset", ["2spirals", "moons", "checkerboard", "8gaussians"])
def test_exact_ot_is_the_unique_optimal_permutation(dataset):
    """With continuous data the optimal pairing is unique, so any exact solver
    returns the same permutation: the coupling's semantics do not depend on the
    algorithm inside."""
    rng = np.random.default_rng(11)
    for _ in range(4):
        x0 = rng.standard_normal((256, 2)).astype(np.float32)
        x1 = sample(dataset, 256, rng)
        y0, _ = cp.exact_ot(x0, x1)
        _, cols = scipy_optimum(x0, x1)
        assert np.array_equal(y0, x0[cols])


def test_sliced_guess_speeds_up_the_generic_solver_without_changing_it():
    """linear_assignment with the sliced guess returns the optimum of the
    plain solver (what metrics.w2 would get)."""
    from fmnumpy.couplings.assignment import linear_assignment
    rng = np.random.default_rng(13)
    a, b = sample("2spirals", 300, rng), sample("2spirals", 300, rng)
    C = sq_dists(a, b)
    plain = C[np.arange(300), linear_assignment(C)].sum()
    guided = C[np.arange(300), linear_assignment(C, ot.sliced_guess(a, b))].sum()
    assert guided == pytest.approx(plain, rel=1e-12)


def test_exact_ot_rejects_points_without_finite_costs():
    x0, x1 = batch(8)
    for bad in (np.nan, np.inf, 1e200):
        z = x1.copy()
        z[3, 1] = bad
        with pytest.raises(FmnumpyError, match="finite"):
            cp.exact_ot(x0, z)
        with pytest.raises(FmnumpyError, match="finite"):
            cp.exact_ot_chunk(x0[None], z[None])


@pytest.mark.parametrize("lam, D", [(1.0, 2), (0.3, 2), (2.5, 3), (1.7, 1), (0.8, 6)])
def test_sliced_potential_is_exact_for_scaled_and_shifted_copies(lam, D):
    """For x1 = lam x0 + c the Brenier potential is quadratic, each 1-D map is
    linear and the trapezoid rule exact: u_i = ||a_i||^2 - 2 psi(a_i) with
    psi(a) = ||a||^2 / (2 lam) - c'.a / lam, up to a constant, where a and c'
    are taken relative to the mean of x1."""
    rng = np.random.default_rng(D)
    B = 200
    x0 = rng.standard_normal((B, D))
    c = rng.standard_normal(D)
    x1 = lam * x0 + c
    u = np.empty(B)
    nf, ni = ot.ot_work_sizes(B, D)
    fbuf, ibuf = np.empty(nf), np.empty(ni, dtype=np.int32)
    _, _, _, x0T, center, proj, _, _, order, count, _ = ot._ot_views(B, D, fbuf, ibuf)
    x0T[:] = x0.T
    ot.sliced_potential(x1, x0T, u, center, proj, order, count)
    np.testing.assert_array_equal(u, ot.sliced_guess(x1, x0))
    m = x1.mean(0)
    a, shift = x1 - m, c + (lam - 1) * m          # a = lam (x0 - m) + shift
    psi = (a ** 2).sum(1) / (2 * lam) - a @ shift / lam
    expected = (a ** 2).sum(1) - 2 * psi
    np.testing.assert_allclose(u - u.mean(), expected - expected.mean(),
                               atol=1e-9 * np.abs(expected).max())


def test_exact_ot_chunk_uses_all_threads_alike():
    """Batches dealt out to several tasks (K not a multiple of the thread
    count) give the per-batch results."""
    import numba
    rng = np.random.default_rng(12)
    x0 = rng.standard_normal((7, 48, 2))
    x1 = sample("moons", 7 * 48, rng).reshape(7, 48, 2)
    old = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            y0, _ = cp.exact_ot_chunk(x0, x1)
            for c in range(7):
                assert np.array_equal(y0[c], cp.exact_ot(x0[c], x1[c])[0])
    finally:
        numba.set_num_threads(old)


# ---- Sinkhorn ---------------------------------------------------------------------------

@pytest.mark.parametrize("reg", [0.05, 0.5, 5.0])
def test_sinkhorn_plan_has_uniform_marginals(reg):
    x0, x1 = batch(48, seed=5)
    P, it = cp.sinkhorn_plan(x0, x1, reg=reg, n_iter=50000, tol=1e-8)
    assert it < 50000 and (P >= 0).all()
    np.testing.assert_allclose(P.sum(0), 1 / 48, atol=1e-12)   # exact after the last update
    assert np.abs(P.sum(1) - 1 / 48).sum() < 1e-7


def test_sinkhorn_plan_limits():
    """reg -> 0: the plan's cost tends to the OT cost; reg -> inf: the plan
    tends to the independent coupling a b^T."""
    x0, x1 = batch(20, seed=6)
    C = ((x0[:, None] - x1[None]) ** 2).sum(-1)
    ot = cost(cp.exact_ot(x0, x1)[0], x1) / 20
    P, _ = cp.sinkhorn_plan(x0, x1, reg=1e-3, n_iter=20000, tol=1e-10)
    assert (P * C).sum() == pytest.approx(ot, rel=1e-3)
    P, _ = cp.sinkhorn_plan(x0, x1, reg=1e6, n_iter=100, tol=1e-12)
    np.testing.assert_allclose(P, 1 / 400, rtol=1e-4)


def test_sinkhorn_coupling_draws_pairs_from_the_plan():
    x0, x1 = batch(16, seed=7)
    y0, y1 = cp.sinkhorn(x0, x1, np.random.default_rng(8), reg=0.5)
    z0, z1 = cp.sinkhorn(x0, x1, np.random.default_rng(8), reg=0.5)
    assert np.array_equal(y0, z0) and np.array_equal(y1, z1)      # a function of the rng
    P, _ = cp.sinkhorn_plan(x0, x1, reg=0.5)
    for a, b in zip(y0, y1):
        i = np.flatnonzero((x0 == a).all(1))[0]
        j = np.flatnonzero((x1 == b).all(1))[0]
        assert P[i, j] > 1e-8                                    # never an impossible pair
    # the empirical pair frequencies follow the plan: chi-square over the
    # cells of the plan with mass, and the mean cost of the drawn pairs
    rng = np.random.default_rng(9)
    counts = np.zeros((16, 16))
    for _ in range(1000):
        y0, y1 = cp.sinkhorn(x0, x1, rng, reg=0.5)
        i = [np.flatnonzero((x0 == a).all(1))[0] for a in y0]
        j = [np.flatnonzero((x1 == b).all(1))[0] for b in y1]
        np.add.at(counts, (i, j), 1)
    n = counts.sum()
    big = P > 5 / n
    chi2 = ((counts[big] - n * P[big]) ** 2 / (n * P[big])).sum()
    dof = big.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)
    C = ((x0[:, None] - x1[None]) ** 2).sum(-1)
    sd = np.sqrt((P * C**2).sum() - (P * C).sum() ** 2)
    assert (counts * C).sum() / n == pytest.approx((P * C).sum(), abs=5 * sd / np.sqrt(n))


def test_sinkhorn_rejects_bad_options():
    x0, x1 = batch(4)
    with pytest.raises(FmnumpyError, match="regularisation"):
        cp.sinkhorn(x0, x1, np.random.default_rng(0), reg=0.0)
    with pytest.raises(FmnumpyError, match="iteration"):
        cp.sinkhorn(x0, x1, np.random.default_rng(0), n_iter=0)


# ---- registry and the training hook -----------------------------------------------------

def test_registry():
    assert set(cp.COUPLINGS) == {"independent", "ot", "exact_ot", "sinkhorn"}
    assert cp.get_coupling("ot") is cp.exact_ot
    x0, x1 = batch(5)
    assert cp.get_coupling("independent")(x0, x1, None) == (x0, x1)
    sb = cp.get_coupling("sinkhorn", reg=2 * 0.5**2)
    assert sb.keywords == {"reg": 0.5}
    with pytest.raises(FmnumpyError, match="exact_ot, sinkhorn"):
        cp.get_coupling("optimal")
    with pytest.raises(FmnumpyError, match="reg"):
        cp.get_coupling("exact_ot", reg=1.0)


@pytest.mark.parametrize("x0, x1", [(np.zeros((3, 2)), np.zeros((4, 2))),
                                    (np.zeros((3, 2)), np.zeros((3, 3))),
                                    (np.zeros(3), np.zeros(3))])
def test_bad_batches_raise(x0, x1):
    for name in cp.COUPLINGS:
        if name != "independent":
            with pytest.raises(FmnumpyError):
                cp.get_coupling(name)(x0, x1, np.random.default_rng(0))


def test_batch_stream_hook_applies_exact_ot():
    from fmnumpy.euclidean.stream import BatchStream

    def draw(n, rng):
        return rng.standard_normal((n, 2)) * 0.3 + 2.0

    plain = BatchStream(draw, 2, 32, seed=0, dtype=np.float32)
    ot = BatchStream(draw, 2, 32, seed=0, dtype=np.float32, coupling=cp.exact_ot)
    for step in (0, 1, 70):
        a0, a1, at = plain.batch_at(step)
        b0, b1, bt = ot.batch_at(step)
        assert np.array_equal(a1, b1) and np.array_equal(at, bt)
        assert row_permutation(b0, a0) is not None
        assert cost(b0, b1) <= cost(a0, a1)


# ---- the extra paths: ut = d xt / dt ----------------------------------------------------

def fill(path, x0, x1, t, *extra):
    xt, ut = np.empty_like(x0), np.empty_like(x0)
    path(x0, x1, t, *extra, xt, ut)
    return xt, ut


def central_difference(path, x0, x1, t, *extra, h=1e-6):
    xp, _ = fill(path, x0, x1, t + h, *extra)
    xm, _ = fill(path, x0, x1, t - h, *extra)
    return (xp - xm) / (2 * h)


@SETTINGS
@given(B=st.integers(1, 6), D=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_cosine_path_velocity_is_the_time_derivative(B, D, seed):
    rng = np.random.default_rng(seed)
    x0, x1 = rng.standard_normal((2, B, D))
    t = rng.uniform(0.01, 0.99, B)
    _, ut = fill(cosine_path, x0, x1, t, 0.0)
    np.testing.assert_allclose(ut, central_difference(cosine_path, x0, x1, t, 0.0),
                               rtol=1e-6, atol=1e-7)


def test_cosine_path_ends_and_variance():
    rng = np.random.default_rng(0)
    x0, x1 = rng.standard_normal((2, 4000, 2))
    xt, _ = fill(cosine_path, x0, x1, np.zeros(4000), 0.0)
    assert np.array_equal(xt, x0)
    xt, ut = fill(cosine_path, x0, x1, np.ones(4000), 0.0)
    np.testing.assert_allclose(xt, x1, atol=1e-15)
    np.testing.assert_allclose(ut, -np.pi / 2 * x0, atol=1e-15)
    xt, _ = fill(cosine_path, x0, x1, np.full(4000, 0.37), 0.0)   # variance preserving
    assert xt.var() == pytest.approx(1.0, abs=0.05)


@SETTINGS
@given(B=st.integers(1, 6), D=st.integers(1, 4), seed=st.integers(0, 2**31 - 1),
       sigma=st.floats(0.01, 3.0))
def test_sb_path_velocity_is_the_time_derivative(B, D, seed, sigma):
    """For fixed x0, x1 and eps: ut = d/dt [(1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) eps]."""
    rng = np.random.default_rng(seed)
    x0, x1, eps = rng.standard_normal((3, B, D))
    t = rng.uniform(0.02, 0.98, B)
    _, ut = fill(sb_path, x0, x1, t, sigma, eps)
    np.testing.assert_allclose(ut, central_difference(sb_path, x0, x1, t, sigma, eps),
                               rtol=1e-5, atol=1e-6)


def test_sb_path_matches_torchcfm_formula_and_ends():
    rng = np.random.default_rng(1)
    x0, x1, eps = rng.standard_normal((3, 50, 2))
    t = rng.random(50)
    sigma = 0.7
    xt, ut = fill(sb_path, x0, x1, t, sigma, eps)
    mu = (1 - t)[:, None] * x0 + t[:, None] * x1
    np.testing.assert_allclose(xt, mu + sigma * np.sqrt(t * (1 - t))[:, None] * eps, atol=1e-14)
    coef = (1 - 2 * t) / (2 * t * (1 - t) + SB_DENOM_EPS)
    np.testing.assert_allclose(ut, coef[:, None] * (xt - mu) + x1 - x0, rtol=1e-9, atol=1e-12)
    for end, x in ((0.0, x0), (1.0, x1)):
        xt, ut = fill(sb_path, x0, x1, np.full(50, end), sigma, eps)
        np.testing.assert_allclose(xt, x, atol=1e-15)
        np.testing.assert_allclose(ut, x1 - x0, atol=1e-15)


def test_paths_in_float32():
    rng = np.random.default_rng(2)
    x0, x1, eps = rng.standard_normal((3, 8, 2)).astype(np.float32)
    t = rng.random(8).astype(np.float32)
    for path, extra in ((cosine_path, (np.float32(0.0),)), (sb_path, (np.float32(1.0), eps))):
        xt, ut = fill(path, x0, x1, t, *extra)
        assert xt.dtype == np.float32 and np.isfinite(ut).all()
