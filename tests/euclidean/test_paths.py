"""The probability paths as training options (docs/couplings.md#paths): ut is the time
derivative of xt on every path, the full loss gradient still matches finite
differences, short cosine and Schrodinger-bridge runs learn 2spirals, a bridge run
resumes bit for bit, and bad settings end in one clear line.

Dimension letters: B batch, D data dimension, N samples."""
import os

import numba
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from fmnumpy import FlowMatcher, FmnumpyError
from fmnumpy.train import checkpoint as ckpt_mod
from fmnumpy.config import DATA_CHUNK_STEPS
from fmnumpy.euclidean.datasets import sample as draw
from fmnumpy.metrics import w2
from fmnumpy.euclidean.paths import (COSINE, GAUSS, NOISY, PATHS, SB, SB_SIGMA, STRAIGHT,
    fill_path)
from fmnumpy.euclidean.paths import SB_DENOM_EPS
from fmnumpy.euclidean.stream import PathNoise
from reference import FIXTURES  # noqa: E402

from reference import (SETTINGS, NAME, assert_grad_close, away_from_kinks, central_diff,
                       compiled_loss_and_grad, features_ref, kinds, make_problem, mlp_ref,
                       problem)

# (path code, its sigma) for every path, with sigma_min > 0 for the straight one
CASES = [(STRAIGHT, 0.0), (STRAIGHT, 0.01), (COSINE, 0.0), (SB, 0.1), (SB, SB_SIGMA),
         (GAUSS, 0.1)]
cases = st.sampled_from(CASES)


def noise_for(path, rng, B, D):
    """eps (B, D) for the bridge and the sigma path, the empty (0, D) for the others."""
    return rng.standard_normal((B, D)) if path in NOISY else np.zeros((0, D))


def fill(path, x0, x1, t, sigma, eps):
    xt, ut = np.empty_like(x0), np.empty_like(x0)
    fill_path(path, x0, x1, t, sigma, eps, xt, ut)
    return xt, ut


# ---- ut = d xt / dt ------------------------------------------------------------------------

@SETTINGS
@given(case=cases, B=st.integers(1, 6), D=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_ut_is_the_time_derivative_of_xt_on_every_path(case, B, D, seed):
    """float64 central differences in t at fixed (x0, x1, eps)."""
    path, sigma = case
    rng = np.random.default_rng(seed)
    x0, x1 = rng.standard_normal((2, B, D))
    eps = noise_for(path, rng, B, D)
    t = rng.uniform(0.02, 0.98, B)             # the bridge's s_t' is singular at 0 and 1
    h = 1e-6
    _, ut = fill(path, x0, x1, t, sigma, eps)
    fd = (fill(path, x0, x1, t + h, sigma, eps)[0] - fill(path, x0, x1, t - h, sigma, eps)[0])
    np.testing.assert_allclose(ut, fd / (2 * h), rtol=1e-6, atol=1e-6)


def test_every_path_starts_at_the_prior_and_ends_at_the_data():
    rng = np.random.default_rng(0)
    x0, x1, eps = rng.standard_normal((3, 20, 2))
    for path, sigma in CASES:
        e = eps if path in NOISY else np.zeros((0, 2))
        # the sigma path is a tube of width sigma around the straight line, at both ends
        tube = sigma * eps if path == GAUSS else 0.0
        xt, _ = fill(path, x0, x1, np.zeros(20), sigma, e)
        np.testing.assert_allclose(xt, x0 + tube, atol=1e-15)
        xt, _ = fill(path, x0, x1, np.ones(20), sigma, e)
        # Lipman's path ends at x1 + sigma_min x0, a Gaussian of width sigma_min around x1
        np.testing.assert_allclose(xt, (x1 + sigma * x0 if path == STRAIGHT else x1) + tube,
                                   atol=1e-15)


def test_the_bridge_without_noise_is_the_straight_path():
    rng = np.random.default_rng(1)
    x0, x1 = rng.standard_normal((2, 30, 3))
    t = rng.random(30)
    sb = fill(SB, x0, x1, t, 0.7, np.zeros((30, 3)))
    straight = fill(STRAIGHT, x0, x1, t, 0.0, np.zeros((0, 3)))
    np.testing.assert_allclose(sb[0], straight[0], atol=1e-15)
    np.testing.assert_allclose(sb[1], straight[1], atol=1e-15)


def test_the_bridge_refuses_noise_of_another_shape():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="noise"):
        fill(SB, x, x, np.full(4, 0.5), 1.0, np.zeros((0, 2)))


# ---- the full loss on every path -------------------------------------------------------------

def path_ref(path, sigma, x0, x1, t, eps):
    """xt, ut (B, D) in NumPy, in the papers' own forms (TorchCFM's for the bridge)."""
    T = t[:, None]
    if path == COSINE:
        a, b = np.cos(np.pi / 2 * T), np.sin(np.pi / 2 * T)
        return a * x0 + b * x1, np.pi / 2 * (a * x1 - b * x0)
    mu = (1 - T) * x0 + T * x1
    if path == GAUSS:                          # Tong et al. 2024, eq. 14-15
        return mu + sigma * eps, x1 - x0
    if path == SB:
        xt = mu + sigma * np.sqrt(T * (1 - T)) * eps
        return xt, (1 - 2 * T) / (2 * T * (1 - T) + SB_DENOM_EPS) * (xt - mu) + x1 - x0
    return mu + sigma * T * x0, x1 - (1 - sigma) * x0


def loss_ref(theta, sizes, kind, n_freq, path, sigma, x0, x1, t, eps):
    xt, ut = path_ref(path, sigma, x0, x1, t, eps)
    v, zs = mlp_ref(theta, sizes, kind, features_ref(xt, t, n_freq))
    return np.mean((v - ut) ** 2), zs


@SETTINGS
@given(case=cases, kind=kinds, **problem)
def test_loss_and_grad_matches_finite_differences_on_every_path(
        case, kind, seed, hidden, D, B, n_freq):
    path, sigma = case
    sizes, theta, x0, x1, t = make_problem(seed, hidden, D, B, n_freq)
    eps = noise_for(path, np.random.default_rng(seed + 1), B, D)
    L_ref, zs = loss_ref(theta, sizes, kind, n_freq, path, sigma, x0, x1, t, eps)
    assume(away_from_kinks(zs, kind))
    L, dtheta = compiled_loss_and_grad(theta, sizes, kind, n_freq, x0, x1, t, sigma,
                                       path=path, eps=eps)
    assert L == pytest.approx(L_ref, rel=1e-9, abs=1e-12)
    fd = central_diff(lambda: loss_ref(theta, sizes, kind, n_freq, path, sigma, x0, x1, t,
                                       eps)[0], theta)
    assert_grad_close(f"dL/dtheta path {path} sizes={sizes.tolist()} {NAME[kind]}", dtheta,
                      fd, rtol=1e-6 if path != SB else 1e-5)


# ---- the noise stream ------------------------------------------------------------------------

def test_bridge_noise_is_a_function_of_seed_and_step():
    a = PathNoise(True, 2, 8, seed=5, dtype=np.float32)
    first = [a.noise_at(s).copy() for s in (0, 1, DATA_CHUNK_STEPS + 3)]
    assert all(e.shape == (8, 2) and e.dtype == np.float32 for e in first)
    assert not np.array_equal(first[0], first[1])
    b = PathNoise(True, 2, 8, seed=5, dtype=np.float32)      # fresh, starts mid-stream
    np.testing.assert_array_equal(b.noise_at(DATA_CHUNK_STEPS + 3), first[2])
    np.testing.assert_array_equal(b.noise_at(1), first[1])
    assert not np.array_equal(PathNoise(True, 2, 8, 6, np.float32).noise_at(0), first[0])
    assert PathNoise(False, 2, 8, 5, np.float32).noise_at(0).shape == (0, 2)


# ---- training --------------------------------------------------------------------------------

N = 1000


@pytest.fixture(scope="module")
def fresh_and_prior_w2():
    data = draw("2spirals", N, np.random.default_rng(101)).astype(np.float64)
    prior = np.random.default_rng(103).standard_normal((N, 2))
    return data, w2(prior, data)


@pytest.mark.parametrize("path", ["cosine", "sb"])
def test_short_run_on_each_path_learns_2spirals(path, fresh_and_prior_w2):
    data, w_prior = fresh_and_prior_w2
    fm = FlowMatcher(hidden=(64, 64), seed=0, lr=3e-3, warmup=50, threads=1, path=path,
                     x_freqs=0)
    fm.fit("2spirals", steps=400, batch_size=128)
    assert np.isfinite(fm.losses_).all()
    x = fm.sample(N, method="rk4", steps=20, seed=102)
    w_model = w2(x, data)
    print(f"{path}: W2 model {w_model:.3f}, prior {w_prior:.3f}")
    assert w_model < 0.6 * w_prior


THREADS = min(2, numba.config.NUMBA_NUM_THREADS)   # the chunking of a step follows it
HALF = 70                                          # crosses the 64-step data chunk
assert HALF > DATA_CHUNK_STEPS


def bridge_model(**kw):
    return FlowMatcher(hidden=(16, 16), seed=3, warmup=10, lr=3e-3, threads=THREADS,
                       path="sb", sb_sigma=0.5, **kw)


def test_bridge_run_resumes_bit_for_bit_from_a_checkpoint(tmp_path):
    numba.set_num_threads(THREADS)
    whole = bridge_model().fit("2spirals", steps=2 * HALF, batch_size=32)
    half = bridge_model().fit("2spirals", steps=2 * HALF, batch_size=32, until=HALF)
    half.save(tmp_path / "half.npz")
    resumed = FlowMatcher.load(tmp_path / "half.npz")
    resumed.threads = THREADS
    assert (resumed.path, resumed.sb_sigma) == ("sb", 0.5)
    resumed.fit("2spirals", steps=2 * HALF, batch_size=32, warm_start=True)
    assert resumed.step_ == whole.step_ == 2 * HALF
    for name in ("theta_", "ema_", "m_", "v_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name),
                                      err_msg=name)
    assert resumed.losses_ == whole.losses_
    # the noise is drawn: the same seed on the straight path trains otherwise
    straight = FlowMatcher(hidden=(16, 16), seed=3, warmup=10, lr=3e-3, threads=THREADS)
    straight.fit("2spirals", steps=2 * HALF, batch_size=32, until=5)
    assert straight.losses_ != whole.losses_[:5]


def test_checkpoint_without_a_path_loads_as_straight(tmp_path):
    fm = FlowMatcher(hidden=(4,), seed=0, path="cosine").fit("2spirals", steps=2,
                                                             batch_size=8)
    fm.save(tmp_path / "new.npz")
    meta, arrays = ckpt_mod.load_checkpoint(tmp_path / "new.npz")
    assert meta["params"]["path"] == "cosine" and meta["params"]["sb_sigma"] == SB_SIGMA
    assert FlowMatcher.load(tmp_path / "new.npz").path == "cosine"
    # fmnumpy 0.1.0's schema (tests/fixtures), as written before the option existed
    meta, arrays = ckpt_mod.load_checkpoint(os.path.join(
        FIXTURES, "checkpoints", "euclidean.npz"))
    for key in ("path", "sb_sigma"):
        del meta[key]
    ckpt_mod.save_checkpoint(tmp_path / "old.npz", meta, arrays)
    old = FlowMatcher.load(tmp_path / "old.npz")
    assert (old.path, old.sb_sigma, old.path_args()) == ("straight", SB_SIGMA, (STRAIGHT, 0.0))
    old.fit("2spirals", steps=old.step_ + 4, batch_size=old.batch_size_, warm_start=True)
    assert old.step_ == 34                            # the fixture was at step 30


# ---- bad settings ----------------------------------------------------------------------------

def one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_unknown_path_lists_the_valid_names():
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher(path="vp")
    one_line(e, "'vp'", *PATHS)


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), "abc", None])
def test_bad_bridge_noise(sigma):
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher(path="sb", sb_sigma=sigma)
    one_line(e, "sb_sigma", "positive")


def test_sigma_min_belongs_to_the_straight_path():
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher(path="cosine", sigma_min=0.1)
    one_line(e, "sigma_min", "straight")


def test_path_elements_are_the_array_paths():
    """The scalar formulas the GPU compiles (paths.cosine_element, sb_element), called
    as plain Python, against the CPU's compiled array paths built from them."""
    from fmnumpy.euclidean.paths import cosine_element, cosine_path, sb_element, sb_path
    rng = np.random.default_rng(0)
    x0, x1, eps = (rng.standard_normal((5, 3)) for _ in range(3))
    t = np.concatenate([[0.0, 1.0], rng.random(3)])
    xt, ut = np.empty((5, 3)), np.empty((5, 3))
    for fill, element in ((lambda: cosine_path(x0, x1, t, 0.0, xt, ut),
                           lambda i, d: cosine_element(x0[i, d], x1[i, d], t[i])),
                          (lambda: sb_path(x0, x1, t, 0.7, eps, xt, ut),
                           lambda i, d: sb_element(x0[i, d], x1[i, d], t[i], 0.7, eps[i, d]))):
        fill()
        for i in range(5):
            for d in range(3):
                np.testing.assert_allclose(element(i, d), (xt[i, d], ut[i, d]), rtol=1e-14,
                                           atol=1e-15)


@pytest.mark.parametrize("path", ["cosine", "sb"])
def test_every_path_is_configured_for_the_gpu(path):
    """The GPU trains every path; without a GPU fit says so in one line."""
    from fmnumpy.euclidean.cuda import gpu_available
    fm = FlowMatcher(hidden=(4,), path=path, device="cuda")
    assert fm.get_params()["path"] == path
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(FmnumpyError) as e:
        fm.fit("2spirals", steps=2, batch_size=8)
    one_line(e, "GPU", "--device cpu")
