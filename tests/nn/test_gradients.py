"""Every hand-written backward checked in float64 against central finite differences
of an independent NumPy forward (STYLE.md rule 7), over hypothesis-drawn shapes.

Dimension letters: B batch, D data dimension, F input features, H hidden width,
P number of parameters.  Each check prints the max abs difference (``pytest -s``).
"""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from fmnumpy.nn import loss as lossmod
from fmnumpy.nn import mlp

from reference import (EPS, KINK_MARGIN, KINKED, NAME, SETTINGS, act_ref, assert_grad_close, away_from_kinks,
                       central_diff, cfm_loss_ref, compiled_loss_and_grad, features_ref, kinds,
                       make_problem, mlp_ref, problem)

# ---- the full loss -------------------------------------------------------------------

@SETTINGS
@given(kind=kinds, sigma_min=st.sampled_from([0.0, 0.01]), **problem)
def test_loss_and_grad_matches_finite_differences_for_every_parameter(
        seed, hidden, D, B, n_freq, kind, sigma_min):
    sizes, theta, x0, x1, t = make_problem(seed, hidden, D, B, n_freq)
    L_ref, zs = cfm_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, sigma_min)
    assume(away_from_kinks(zs, kind))
    L, dtheta = compiled_loss_and_grad(theta, sizes, kind, n_freq, x0, x1, t, sigma_min)
    assert L == pytest.approx(L_ref, rel=1e-12, abs=1e-14)
    fd = central_diff(lambda: cfm_loss_ref(theta, sizes, kind, n_freq, x0, x1, t,
                                           sigma_min)[0], theta)
    assert dtheta.shape == (mlp.param_count(sizes),)
    assert_grad_close(f"dL/dtheta sizes={sizes.tolist()} {NAME[kind]}", dtheta, fd)


@SETTINGS
@given(kind=kinds, x_freqs=st.integers(1, 3), **problem)
def test_loss_and_grad_with_fourier_features_of_x(seed, hidden, D, B, n_freq, kind, x_freqs):
    """The plane-wave features of x (mlp.input_features) against the independent
    NumPy features: the loss to 1e-12 and every parameter's gradient to central
    differences (the features are inputs: no gradient flows into them)."""
    sizes, theta, x0, x1, t = make_problem(seed, hidden, D, B, n_freq, x_freqs=x_freqs)
    L_ref, zs = cfm_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, 0.0, x_freqs)
    assume(away_from_kinks(zs, kind))
    L, dtheta = compiled_loss_and_grad(theta, sizes, kind, n_freq, x0, x1, t, 0.0,
                                       x_freqs=x_freqs)
    assert sizes[0] == D + 2 * x_freqs * D * D + 1 + 2 * n_freq
    assert L == pytest.approx(L_ref, rel=1e-12, abs=1e-14)
    fd = central_diff(lambda: cfm_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, 0.0,
                                           x_freqs)[0], theta)
    assert_grad_close(f"dL/dtheta x_freqs={x_freqs} sizes={sizes.tolist()}", dtheta, fd)


@pytest.mark.parametrize("D", [1, 2, 3])
def test_plane_waves_by_doubling_match_the_direct_sines(D):
    """mlp.plane_waves computes octave k + 1 from octave k (mlp.double_angle); the
    features equal the direct sin/cos(pi 2^k b . x) of features_ref to 1e-12 in float64
    up to 6 octaves and |x| up to 30, and to float32 rounding in float32."""
    rng = np.random.default_rng(D)
    x = rng.uniform(-30, 30, (200, D))
    t = rng.random(200)
    K = 6
    feats = (0, K, mlp.feature_directions(D))
    X = np.empty((200, mlp.feature_count(D, 0, x_freqs=K)))
    mlp.input_features(x, t, feats, X)
    want = features_ref(x, t, 0, K)
    np.testing.assert_allclose(X, want, rtol=0, atol=1e-12)
    X32 = np.empty(X.shape, np.float32)
    mlp.input_features(x.astype(np.float32), t.astype(np.float32), feats, X32)
    want32 = features_ref(x.astype(np.float32).astype(np.float64), t, 0, K)
    np.testing.assert_allclose(X32, want32, rtol=0, atol=2e-7)


@SETTINGS
@given(kind=kinds, **problem)
def test_loss_and_grad_overwrites_stale_gradient(seed, hidden, D, B, n_freq, kind):
    """loss_and_grad clears dtheta itself (zero_grad once per step)."""
    sizes, theta, x0, x1, t = make_problem(seed, hidden, D, B, n_freq)
    _, clean = compiled_loss_and_grad(theta, sizes, kind, n_freq, x0, x1, t, 0.0)
    stale = np.full_like(theta, 123.0)
    _, again = compiled_loss_and_grad(theta, sizes, kind, n_freq, x0, x1, t, 0.0, dtheta=stale)
    np.testing.assert_array_equal(again, clean)


@SETTINGS
@given(kind=kinds, sigma_min=st.sampled_from([0.0, 0.01]), **problem)
def test_float32_and_float64_agree(seed, hidden, D, B, n_freq, kind, sigma_min):
    sizes, theta, x0, x1, t = make_problem(seed, hidden, D, B, n_freq)
    _, zs = cfm_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, sigma_min)
    assume(away_from_kinks(zs, kind))          # float32 rounding may flip a relu unit
    L64, g64 = compiled_loss_and_grad(theta, sizes, kind, n_freq, x0, x1, t, sigma_min)
    f32 = [a.astype(np.float32) for a in (theta, x0, x1, t)]
    L32, g32 = compiled_loss_and_grad(f32[0], sizes, kind, n_freq, *f32[1:], sigma_min)
    assert g32.dtype == np.float32
    assert L32 == pytest.approx(L64, rel=1e-4, abs=1e-5)
    assert_grad_close("float32 vs float64 dtheta", g32.astype(np.float64), g64, rtol=1e-4)


# ---- each layer on its own -----------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 5), n_in=st.integers(1, 7),
       n_out=st.integers(1, 7), want_dh=st.booleans())
def test_linear_backward_matches_fd_and_accumulates(seed, B, n_in, n_out, want_dh):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((B, n_in))
    W = rng.standard_normal((n_in, n_out))
    b = rng.standard_normal(n_out)
    G = rng.standard_normal((B, n_out))          # upstream dz of L = sum(G * z)

    def L():
        z = np.zeros((B, n_out))
        mlp.linear_forward(h, W, b, z)
        return float(np.sum(G * z))

    z = np.zeros((B, n_out))
    mlp.linear_forward(h, W, b, z)
    np.testing.assert_allclose(z, h @ W + b, rtol=1e-12, atol=1e-12)

    dW0 = rng.standard_normal((n_in, n_out))     # accumulation: start from junk
    db0 = rng.standard_normal(n_out)
    dW, db = dW0.copy(), db0.copy()
    dh = np.full((B, n_in) if want_dh else (0, n_in), np.nan)
    S = np.zeros(n_in * n_out)
    mlp.linear_backward(G, h, W, dh, dW, db, S)
    assert_grad_close("linear dW", dW - dW0, central_diff(L, W))
    assert_grad_close("linear db", db - db0, central_diff(L, b))
    if want_dh:
        assert_grad_close("linear dh", dh, central_diff(L, h))   # overwritten, not +=
    # a second call adds the same gradient again
    mlp.linear_backward(G, h, W, dh, dW, db, S)
    np.testing.assert_allclose(dW - dW0, 2 * central_diff(L, W), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db - db0, 2 * central_diff(L, b), rtol=1e-5, atol=1e-5)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 5), H=st.integers(1, 7), kind=kinds,
       scale=st.sampled_from([0.5, 3.0, 30.0]))
def test_activation_backward_matches_fd(seed, B, H, kind, scale):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((B, H)) * scale
    if kind in KINKED:
        assume(np.min(np.abs(z)) > KINK_MARGIN)
    da = rng.standard_normal((B, H))
    a = np.zeros((B, H))
    mlp.activation_forward(z, kind, a)
    np.testing.assert_allclose(a, act_ref(z, kind), rtol=1e-12, atol=1e-12)
    dz = np.zeros((B, H))
    mlp.activation_backward(da, z, kind, dz)
    fd = da * (act_ref(z + EPS, kind) - act_ref(z - EPS, kind)) / (2 * EPS)
    assert_grad_close(f"activation {NAME[kind]} dz", dz, fd)
    # in place (dz is da), as mlp_backward uses it
    buf = da.copy()
    mlp.activation_backward(buf, z, kind, buf)
    np.testing.assert_array_equal(buf, dz)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 5), n_in=st.integers(1, 7),
       H=st.integers(1, 7), kind=kinds)
def test_fused_hidden_layer_matches_fd(seed, B, n_in, H, kind):
    """hidden_forward caches s = sigma'(h W + b); hidden_backward is dz = da * s."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((B, n_in))
    W = rng.standard_normal((n_in, H))
    b = rng.standard_normal(H)
    z = h @ W + b
    if kind in KINKED:
        assume(np.min(np.abs(z)) > KINK_MARGIN)
    a, s_ = np.zeros((B, H)), np.zeros((B, H))
    mlp.hidden_forward(h, W, b, kind, a, s_)
    np.testing.assert_allclose(a, act_ref(z, kind), rtol=1e-12, atol=1e-12)
    fd = (act_ref(z + EPS, kind) - act_ref(z - EPS, kind)) / (2 * EPS)
    assert_grad_close(f"hidden_forward sigma' {NAME[kind]}", s_, fd)
    a2 = np.zeros((B, H))
    mlp.hidden_forward(h, W, b, kind, a2, np.zeros((0, H)))     # inference: no cache
    np.testing.assert_array_equal(a2, a)
    da = rng.standard_normal((B, H))
    dz = np.zeros((B, H))
    mlp.hidden_backward(da, s_, dz)
    np.testing.assert_array_equal(dz, da * s_)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 5), D=st.integers(1, 3))
def test_cfm_loss_backward_matches_fd(seed, B, D):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((B, D))
    ut = rng.standard_normal((B, D))
    L = lossmod.cfm_loss_forward(v, ut)
    assert L == pytest.approx(np.mean((v - ut) ** 2), rel=1e-12)
    dv = np.zeros((B, D))
    lossmod.cfm_loss_backward(v, ut, dv)
    fd = central_diff(lambda: lossmod.cfm_loss_forward(v, ut), v)
    assert_grad_close("cfm loss dv", dv, fd)


@SETTINGS
@given(kind=kinds, **problem)
def test_mlp_backward_matches_fd_and_accumulates(seed, hidden, D, B, n_freq, kind):
    sizes, theta, x0, _, t = make_problem(seed, hidden, D, B, n_freq)
    rng = np.random.default_rng(seed + 1)
    X = features_ref(x0, t, n_freq)
    v_ref, zs = mlp_ref(theta, sizes, kind, X)
    assume(away_from_kinks(zs, kind))
    dv = rng.standard_normal((B, D))             # random upstream gradient

    ws = mlp.Workspace(sizes, B, dtype=np.float64)
    mlp.input_features(x0, t, (n_freq, 0, np.zeros((0, x0.shape[1]))), ws.X)
    np.testing.assert_allclose(ws.X, X, rtol=1e-12, atol=1e-12)
    v = mlp.mlp_forward(theta, sizes, kind, ws.X, ws.A, ws.Z)
    np.testing.assert_allclose(v, v_ref, rtol=1e-10, atol=1e-12)

    dtheta = np.zeros_like(theta)
    dX = np.full_like(X, np.nan)                  # overwritten, not accumulated
    mlp.mlp_backward(dv.copy(), theta, sizes, kind, ws.X, ws.A, ws.Z, dtheta, ws.G1, ws.G2,
                     ws.S, dX)
    fd = central_diff(lambda: float(np.sum(dv * mlp_ref(theta, sizes, kind, X)[0])), theta)
    assert_grad_close(f"mlp_backward sizes={sizes.tolist()} {NAME[kind]}", dtheta, fd)
    fd_X = central_diff(lambda: float(np.sum(dv * mlp_ref(theta, sizes, kind, X)[0])), X)
    assert_grad_close(f"mlp_backward dX sizes={sizes.tolist()} {NAME[kind]}", dX, fd_X)

    once = dtheta.copy()
    mlp.mlp_backward(dv.copy(), theta, sizes, kind, ws.X, ws.A, ws.Z, dtheta, ws.G1, ws.G2,
                     ws.S, ws.X[:0])
    np.testing.assert_allclose(dtheta, 2 * once, rtol=1e-12, atol=1e-14)
    mlp.zero_grad(dtheta)
    assert not dtheta.any()


def test_views_cover_the_flat_buffer_in_documented_order():
    sizes = mlp.layer_sizes(2, (3, 4), n_freq=1)           # F = 2 + 1 + 2 = 5
    assert list(sizes) == [5, 3, 4, 2]
    P = mlp.param_count(sizes)
    assert P == 5 * 3 + 3 + 3 * 4 + 4 + 4 * 2 + 2
    theta = np.arange(P, dtype=np.float64)
    (W1, b1), (W2, b2), (W3, b3) = mlp.views(theta, sizes)
    assert W1.shape == (5, 3) and W1[0, 1] == 1 and b1[0] == 15
    assert W2[0, 0] == 18 and b3[-1] == P - 1
    for W, _ in mlp.views(theta, sizes):
        assert np.shares_memory(W, theta)
