"""Adam / AdamW against Kingma & Ba's Algorithm 1 written out by hand, clipping,
EMA and the learning-rate schedule.  P is the number of parameters."""
import math

import numpy as np
from numba import njit
import pytest
from hypothesis import given, settings, strategies as st

from fmnumpy.train import optim
from fmnumpy.errors import FmnumpyError

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)

P0 = np.array([1.0, -2.0, 0.5, 0.0, 3.0])                   # (P,)
GRADS = np.array([[0.1, -0.2, 0.3, 0.0, -1e-3],             # g_1
                  [0.2, 0.1, -0.3, 0.5, -1e-3],             # g_2
                  [-0.4, 0.3, 0.3, -0.5, 2.0]])             # g_3
LR, B1, B2, EPS = 0.1, 0.9, 0.999, 1e-8


def kingma_ba(p, grads, lr, b1, b2, eps, wd=0.0, decoupled=False):
    """Algorithm 1 of Kingma & Ba (2015), one line per equation, float64; weight
    decay as L2 (g += wd p) or decoupled AdamW (p *= 1 - lr wd, Loshchilov & Hutter)."""
    p = np.array(p, dtype=np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = []
    for k, g in enumerate(grads, start=1):
        g = np.array(g, dtype=np.float64)
        if wd and decoupled:
            p = p * (1.0 - lr * wd)
        elif wd:
            g = g + wd * p
        m = b1 * m + (1.0 - b1) * g                 # biased first moment
        v = b2 * v + (1.0 - b2) * g * g             # biased second raw moment
        mhat = m / (1.0 - b1 ** k)                  # bias-corrected
        vhat = v / (1.0 - b2 ** k)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
        out.append((p.copy(), m.copy(), v.copy()))
    return out


VARIANTS = {
    "adam": dict(wd=0.0, decoupled=False),
    "adam_l2": dict(wd=0.1, decoupled=False),
    "adamw": dict(wd=0.1, decoupled=True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adam_update_first_three_steps_match_algorithm_1(variant):
    kw = VARIANTS[variant]
    want = kingma_ba(P0, GRADS, LR, B1, B2, EPS, **kw)
    theta, m, v = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for k in range(1, 4):
        dtheta = GRADS[k - 1].copy()
        optim.adam_update(theta, dtheta, m, v, k, LR, B1, B2, EPS, kw["wd"], kw["decoupled"])
        wp, wm, wv = want[k - 1]
        print(f"{variant} step {k}: max |p - ref| = {np.abs(theta - wp).max():.2e}")
        np.testing.assert_allclose(theta, wp, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(m, wm, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(v, wv, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(dtheta, GRADS[k - 1])     # gradient not modified


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adam_update_float32_buffers(variant):
    kw = VARIANTS[variant]
    want = kingma_ba(P0, GRADS, LR, B1, B2, EPS, **kw)
    theta = P0.astype(np.float32)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for k in range(1, 4):
        optim.adam_update(theta, GRADS[k - 1].astype(np.float32), m, v, k, LR, B1, B2, EPS,
                          kw["wd"], kw["decoupled"])
    np.testing.assert_allclose(theta, want[-1][0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_adam_element_is_the_same_formula(variant):
    """The scalar function shared with CUDA, called as plain Python and compiled."""
    kw = VARIANTS[variant]
    want = kingma_ba(P0, GRADS, LR, B1, B2, EPS, **kw)
    for fn in (optim.adam_element, optim.adam_element_cpu):
        for i in range(P0.size):
            p, m, v = P0[i], 0.0, 0.0
            for k in range(1, 4):
                bc1, bc2 = 1 - B1 ** k, 1 - B2 ** k
                p, m, v = fn(p, GRADS[k - 1, i], m, v, LR, B1, B2, EPS, kw["wd"],
                             kw["decoupled"], bc1, bc2)
                wp, wm, wv = (a[i] for a in want[k - 1])
                assert p == pytest.approx(wp, rel=1e-12, abs=1e-15)
                assert m == pytest.approx(wm, rel=1e-12, abs=1e-15)
                assert v == pytest.approx(wv, rel=1e-12, abs=1e-15)


# adam_update's own source compiled with Python's zero-division check: a scalar loop
_adam_scalar = njit(error_model="python")(optim.adam_update.py_func)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("P", [1, 3, 8, 13, 1000])
def test_adam_update_vectorised_keeps_the_scalar_bits(P, dtype):
    """The compiled loop (vectorised: no division check) gives the bits of the scalar
    loop, whatever the length (vector body and tail)."""
    rng = np.random.default_rng(P)
    a = [rng.standard_normal(P).astype(dtype) for _ in range(4)]
    a[3] = np.abs(a[3])                                       # v >= 0
    b = [x.copy() for x in a]
    for k in (1, 5):
        optim.adam_update(*a, k, LR, B1, B2, EPS, 0.01, True)
        _adam_scalar(*b, k, LR, B1, B2, EPS, 0.01, True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_first_adam_step_moves_each_weight_by_lr_against_the_gradient_sign():
    """With bias correction, step 1 is p - lr g / (|g| + eps): a move of lr whatever |g|
    (a hand value independent of the reference above)."""
    g = np.array([1e-3, -5.0, 40.0, 0.0])
    theta = np.zeros(4)
    m, v = np.zeros(4), np.zeros(4)
    optim.adam_update(theta, g, m, v, 1, 0.01, 0.9, 0.999, 1e-8, 0.0, True)
    np.testing.assert_allclose(theta, [-0.01, 0.01, -0.01, 0.0], rtol=1e-5)
    np.testing.assert_allclose(m, 0.1 * g)
    np.testing.assert_allclose(v, 0.001 * g * g)


def test_adamw_decay_is_decoupled_and_applied_first():
    """Zero gradient: Adam-L2 sees g = wd p and moves by lr; AdamW only shrinks p by
    the factor (1 - lr wd) and leaves the moments at zero."""
    p0 = np.array([2.0, -4.0])
    lr, wd = 0.1, 0.5
    theta, m, v = p0.copy(), np.zeros(2), np.zeros(2)
    optim.adam_update(theta, np.zeros(2), m, v, 1, lr, B1, B2, EPS, wd, True)
    np.testing.assert_allclose(theta, p0 * (1 - lr * wd), rtol=1e-15)
    assert not m.any() and not v.any()
    theta, m, v = p0.copy(), np.zeros(2), np.zeros(2)
    optim.adam_update(theta, np.zeros(2), m, v, 1, lr, B1, B2, EPS, wd, False)
    np.testing.assert_allclose(theta, p0 - lr * np.sign(p0), rtol=1e-7)
    np.testing.assert_allclose(m, (1 - B1) * wd * p0)


# ---- clipping ----------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), P=st.integers(1, 50),
       scale=st.floats(1e-3, 1e3), max_norm=st.floats(0.01, 10.0))
def test_clip_grad_norm(seed, P, scale, max_norm):
    g = np.random.default_rng(seed).standard_normal(P) * scale
    n_true = float(np.linalg.norm(g))
    clipped = g.copy()
    n = optim.clip_grad_norm(clipped, max_norm)
    assert n == pytest.approx(n_true, rel=1e-12)              # the pre-clip norm
    if n_true > max_norm:
        # PyTorch's rule: scale by max_norm / (||g|| + 1e-6)
        assert np.linalg.norm(clipped) == pytest.approx(max_norm * n_true / (n_true + 1e-6),
                                                        rel=1e-12)
        assert np.linalg.norm(clipped) <= max_norm
        np.testing.assert_allclose(clipped / np.linalg.norm(clipped), g / n_true,
                                   rtol=1e-10, atol=1e-12)     # direction kept
    else:
        np.testing.assert_array_equal(clipped, g)


@pytest.mark.parametrize("max_norm", [0.0, -1.0])
def test_clip_disabled_by_non_positive_max_norm(max_norm):
    g = np.array([300.0, -400.0])
    n = optim.clip_grad_norm(g, max_norm)
    assert n == pytest.approx(500.0)
    np.testing.assert_array_equal(g, [300.0, -400.0])


def test_grad_norm_of_float32_gradient_accumulates_in_float64():
    """optim.grad_norm promises float64 accumulation; squares of float32 entries above
    ~1.8e19 overflow unless each entry is widened before it is squared."""
    g = np.full(10**5, 1e-3, dtype=np.float32)
    assert optim.grad_norm(g) == pytest.approx(math.sqrt(10**5) * 1e-3, rel=1e-6)
    big = np.full(4, 1e20, dtype=np.float32)          # squares overflow float32
    assert optim.grad_norm(big) == pytest.approx(2e20, rel=1e-6)


@pytest.mark.parametrize("P", [0, 1, 7, 8, 9, 17, 1001])
def test_grad_norm_partial_sums_any_length(P):
    """The norm in NORM_LANES partial sums (the tail entries too) is the exact norm."""
    g = np.random.default_rng(P).standard_normal(P).astype(np.float32)
    exact = math.sqrt(math.fsum(float(x) ** 2 for x in g))
    assert optim.grad_norm(g) == pytest.approx(exact, rel=1e-14, abs=0.0)


# ---- EMA -----------------------------------------------------------------------------

def test_ema_update_formula():
    ema = np.array([1.0, 2.0, -3.0])
    theta = np.array([0.0, 4.0, 1.0])
    optim.ema_update(ema, theta, 0.9)
    np.testing.assert_allclose(ema, [0.9, 2.2, -2.6], rtol=1e-14)
    assert optim.ema_element(1.0, 0.0, 0.75) == pytest.approx(0.75)
    assert optim.ema_element_cpu(1.0, 0.0, 0.75) == pytest.approx(0.75)


def test_ema_decay_at_warms_up_then_caps():
    assert optim.ema_decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert optim.ema_decay_at(10, 0.999) == pytest.approx(11 / 20)
    assert optim.ema_decay_at(10**6, 0.999) == 0.999
    assert optim.ema_decay_at(1, 0.1) == 0.1
    ks = np.arange(1, 5000)
    d = [optim.ema_decay_at(int(k), 0.999) for k in ks]
    assert all(a <= b for a, b in zip(d, d[1:]))               # non-decreasing


# ---- learning-rate schedule -------------------------------------------------------------

def test_learning_rate_warmup_and_cosine_endpoints():
    lr, total, warm, lo = 2e-3, 1000, 100, 1e-5
    f = lambda k, s="cosine": optim.learning_rate(k, lr, total, warm, s, lo)   # noqa: E731
    assert f(1) == pytest.approx(lr / warm)
    assert f(50) == pytest.approx(lr / 2)
    assert f(warm) == pytest.approx(lr)                     # end of warm-up: the peak
    assert f(warm + 1) == pytest.approx(lr, rel=1e-3)
    assert f(warm + (total - warm) // 2) == pytest.approx((lr + lo) / 2, rel=1e-12)
    assert f(total) == pytest.approx(lo, rel=1e-12)         # cosine ends at lr_min
    assert f(total + 10) == pytest.approx(lo, rel=1e-12)    # and stays there
    vals = [f(k) for k in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))      # decays monotonically
    assert f(1, "constant") == pytest.approx(lr / warm)
    assert f(500, "constant") == lr
    assert optim.learning_rate(1, lr, total, 0, "cosine", lo) == pytest.approx(lr, rel=1e-5)


def test_learning_rate_unknown_schedule_lists_choices():
    with pytest.raises(FmnumpyError, match="constant, cosine"):
        optim.learning_rate(5, 1e-3, 10, 0, "linear")


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf")])
def test_adam_config_rejects_bad_lr(lr):
    with pytest.raises(FmnumpyError, match="learning rate"):
        optim.AdamConfig(lr=lr)


@pytest.mark.parametrize("kw, what", [
    (dict(betas=(1.0, 0.999)), "betas"), (dict(betas=(0.9, -0.1)), "betas"),
    (dict(betas=(0.9,)), "betas"), (dict(eps=0.0), "eps"), (dict(eps=float("nan")), "eps")])
def test_adam_config_rejects_bad_betas_and_eps(kw, what):
    """A beta of 1 or an eps of 0 would divide by zero in every step."""
    with pytest.raises(FmnumpyError, match=what):
        optim.AdamConfig(**kw)


def test_adam_config_round_trip():
    c = optim.AdamConfig(lr=3e-4, betas=(0.8, 0.99), weight_decay=0.01, decoupled=False,
                         clip=2.0, warmup=7, schedule="cosine", lr_min=1e-6)
    d = optim.AdamConfig.from_dict(c.to_dict())
    assert d.to_dict() == c.to_dict()
