"""Tests for fmnumpy.likelihood: the forward-mode Jacobian and divergence against
central finite differences and a plain NumPy forward (float64, hypothesis
shapes), the closed-form Gaussian flow in both directions and for every
tableau, forward/backward consistency on the network, the float32 network
against the float64 oracle, and the density of a small network integrating to 1.  B batch, D data dimension."""
import math

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fmnumpy.euclidean import likelihood as lk
from fmnumpy.nn.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE
from fmnumpy.errors import FmnumpyError
from fmnumpy.nn.mlp import (MLPSpec, Workspace, init_params, input_features, input_tangents,
    velocity, views)
from fmnumpy.ode.solvers import TABLEAUS, balanced_chunk

from reference import features_ref

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


# ---- a plain NumPy reference network -------------------------------------------------

def np_act(z, name):
    if name == "silu":
        return z / (1.0 + np.exp(-z))
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "selu":
        return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0)))
    return np.tanh(z)


def np_forward(theta, spec, x, t):
    """v (B, D) and the hidden pre-activations, by the book, in float64."""
    h = features_ref(x, t, spec.n_freq, spec.x_freqs)
    layers = views(theta, spec.sizes)
    zs = []
    for l, (W, b) in enumerate(layers):
        z = h @ W + b
        if l < len(layers) - 1:
            zs.append(z)
            h = np_act(z, spec.activation)
        else:
            h = z
    return h, zs


@st.composite
def networks(draw):
    D = draw(st.integers(1, 3))
    hidden = tuple(draw(st.lists(st.integers(1, 8), min_size=1, max_size=3)))
    activation = draw(st.sampled_from(sorted(ACTIVATIONS)))
    n_freq = draw(st.integers(0, 2))
    x_freqs = draw(st.integers(0, 2))
    B = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    scale = draw(st.sampled_from([0.5, 1.0, 2.0]))
    spec = MLPSpec(D, hidden, activation, n_freq, x_freqs=x_freqs)
    rng = np.random.default_rng(seed)
    theta = scale * init_params(spec.sizes, rng, np.float64)
    x = 1.5 * rng.standard_normal((B, D))
    t = rng.uniform(0.0, 1.0, B)
    return spec, theta, x, t


# ---- the forward-mode pass -----------------------------------------------------------

@SETTINGS
@given(networks())
def test_jacobian_and_divergence_match_finite_differences(net):
    spec, theta, x, t = net
    B, D = x.shape
    v_ref, zs = np_forward(theta, spec, x, t)
    h = 1e-6
    # central differences are wrong within h of a kink of relu/selu: skip those draws
    assume(min(np.abs(z).min() for z in zs) > 1e3 * h)
    v, J, div = lk.mlp_jacobian(theta, spec, x, t)
    J_fd = np.empty((B, D, D))
    for d in range(D):
        e = np.zeros(D)
        e[d] = h
        J_fd[:, :, d] = (np_forward(theta, spec, x + e, t)[0]
                         - np_forward(theta, spec, x - e, t)[0]) / (2 * h)
    scale = 1.0 + np.abs(J_fd).max()
    assert np.abs(v - v_ref).max() < 1e-12 * (1.0 + np.abs(v_ref).max())
    assert np.abs(J - J_fd).max() < 1e-6 * scale, np.abs(J - J_fd).max()
    assert np.abs(div - np.trace(J_fd, axis1=1, axis2=2)).max() < 1e-6 * D * scale


@SETTINGS
@given(networks(), st.integers(1, 3))
def test_forward_jvp_matches_mlp_forward_and_jacobian(net, M):
    spec, theta, x, t = net
    B, D = x.shape
    ws = Workspace(spec.sizes, B, np.float64)
    v_mlp = velocity(theta, spec.sizes, spec.kind, spec.feats, x, t, ws.X, ws.A,
                     ws.Z).copy()
    _, J, _ = lk.mlp_jacobian(theta, spec, x, t)
    # arbitrary tangents U (M, B, D): JU[m, i] = J_i U[m, i]
    U = np.random.default_rng(B * 7 + M).standard_normal((M, B, D))
    params = lk.mlp_div_params(theta, spec, B)
    theta64, sizes, kind, feats, X, A = params[:6]
    width = int(sizes[1:].max())
    input_features(x, t, feats, X)
    # the tangents of the embedded point: U_E[m, i] = sum_d U[m, i, d] dX_i[:E]/dx_d
    T = np.zeros((D, B, D + 2 * spec.x_freqs * feats[2].shape[0]))
    input_tangents(X, feats, T)
    UE = np.einsum("mid,die->mie", U, T)
    v, JU = lk.mlp_forward_jvp(theta64, sizes, kind, X, A, UE, np.zeros(M * B * width),
                               np.zeros(M * B * width))
    assert np.abs(v - v_mlp).max() <= 1e-13 * (1 + np.abs(v_mlp).max())
    assert np.abs(JU - np.einsum("ikd,mid->mik", J, U)).max() < 1e-12 * (1 + np.abs(J).max())


# ---- the closed-form Gaussian flow ---------------------------------------------------

MU = np.array([1.0, -0.5])


@pytest.mark.parametrize("s", [0.5, 2.0])
@pytest.mark.parametrize("method,opts", [("rk4", {"steps": 100}),
                                         ("dopri5", {"rtol": 1e-7, "atol": 1e-7})])
def test_gaussian_flow_both_directions(method, opts, s):
    x0 = np.random.default_rng(5).standard_normal((16, 2))
    # forward: sample and its log-density in one solve
    x1, l1, st = lk.integrate_logp(lk.gaussian_field, (MU, s), x0, lk.gaussian_logpdf(x0),
                                   0.0, 1.0, method, **opts)
    assert np.abs(x1 - (MU + s * x0)).max() < 1e-5
    assert np.abs(l1 - lk.gaussian_logpdf(x1, MU, s)).max() < 1e-4
    # backward: score given points
    x = MU + s * np.random.default_rng(6).standard_normal((16, 2)) * 1.5
    xz, lz, st_b = lk.integrate_logp(lk.gaussian_field, (MU, s), x, np.zeros(16), 1.0, 0.0,
                                     method, **opts)
    assert np.abs(xz - (x - MU) / s).max() < 1e-5
    assert np.abs(lk.gaussian_logpdf(xz) - lz - lk.gaussian_logpdf(x, MU, s)).max() < 1e-4
    print(f"{method} s={s}: NFE forward {st.nfe}, backward {st_b.nfe}")


@pytest.mark.parametrize("method", sorted(TABLEAUS))
def test_every_tableau_converges_at_its_order(method):
    """log p error of the backward solve shrinks like h^order."""
    tab = TABLEAUS[method]
    x = MU + 0.5 * np.random.default_rng(7).standard_normal((8, 2))
    exact = lk.gaussian_logpdf(x, MU, 0.5)

    def err(steps):
        xz, lz, _ = lk.integrate_logp(lk.gaussian_field, (MU, 0.5), x, np.zeros(8), 1.0,
                                      0.0, method, steps=steps)
        return np.abs(lk.gaussian_logpdf(xz) - lz - exact).max()

    n = {1: 200, 2: 40, 4: 40}[tab.order]
    rate = math.log2(err(n) / err(2 * n))
    assert abs(rate - tab.order) < 0.15, (method, rate)


# ---- the network ---------------------------------------------------------------------

def small_flow(seed=0, scale=1.0, activation="silu", x_freqs=0):
    spec = MLPSpec(2, (16, 16), activation, n_freq=1, x_freqs=x_freqs)
    theta = scale * init_params(spec.sizes, np.random.default_rng(seed))
    return spec, theta.astype(np.float32)


def test_sample_then_score_agree_on_the_network():
    spec, theta = small_flow(1)
    f64 = dict(dtype=np.float64)                         # the oracle build
    x0 = np.random.default_rng(2).standard_normal((40, 2))
    x1, lp = lk.sample_with_logprob(theta, spec, x0, "rk4", steps=100, **f64)
    assert np.abs(lp - lk.gaussian_logpdf(x0)).max() > 1e-2     # the flow does something
    lp_back = lk.log_prob(theta, spec, x1, "rk4", steps=100, **f64)
    assert np.abs(lp_back - lp).max() < 1e-7
    # dopri5 in both directions, against the rk4 answer; stats are summed over chunks
    x1d, lpd, st = lk.sample_with_logprob(theta, spec, x0, "dopri5", rtol=1e-6, atol=1e-6,
                                          return_stats=True, chunk=40, **f64)
    lpb, stb = lk.log_prob(theta, spec, x1, "dopri5", rtol=1e-6, atol=1e-6,
                           return_stats=True, **f64)
    assert np.abs(x1d - x1).max() < 1e-5 and np.abs(lpd - lp).max() < 1e-5
    assert np.abs(lpb - lp).max() < 1e-5
    n_chunks = -(-40 // balanced_chunk(40, 40, numba.get_num_threads()))
    assert st.nfe == 2 * n_chunks + 6 * (st.accepted + st.rejected) and stb.nfe > 0
    # chunks of 7 particles give the same numbers
    assert np.abs(lk.log_prob(theta, spec, x1, chunk=7, **f64) - lp_back).max() < 1e-12


@pytest.mark.parametrize("activation", ["silu", "tanh", "selu", "relu"])
def test_float32_network_matches_the_float64_oracle(activation):
    """The default build runs the network's forward and tangent passes in float32
    and the state in float64; its log p stays within float32 rounding of the
    float64 oracle's, for a flow that moves the prior."""
    spec = MLPSpec(2, (32, 32, 32), activation, n_freq=2)
    theta = (1.5 * init_params(spec.sizes, np.random.default_rng(4))).astype(np.float32)
    x = 1.5 * np.random.default_rng(5).standard_normal((300, 2))
    ref = lk.log_prob(theta, spec, x, "rk4", steps=20, dtype=np.float64)
    got = lk.log_prob(theta, spec, x, "rk4", steps=20)
    assert np.abs(ref - lk.gaussian_logpdf(x)).max() > 0.05         # not the prior
    err = np.abs(got - ref).max()
    print(f"{activation}: max |float32 - float64| = {err:.2e}")
    assert err < 1e-5 * (1 + np.abs(ref).max()), err
    x1, lp = lk.sample_with_logprob(theta, spec, x, "heun", steps=20)
    x1r, lpr = lk.sample_with_logprob(theta, spec, x, "heun", steps=20, dtype=np.float64)
    assert np.abs(x1 - x1r).max() < 1e-4 and np.abs(lp - lpr).max() < 1e-5 * (1 + np.abs(lpr).max())


def test_threads_do_not_change_the_numbers():
    """Chunks are independent solves: one thread or two, the same bits."""
    spec, theta = small_flow(2)
    x = np.random.default_rng(8).standard_normal((50, 2))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = lk.log_prob(theta, spec, x, "rk4", steps=10, chunk=9)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = lk.log_prob(theta, spec, x, "rk4", steps=10, chunk=9)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, two)


@pytest.mark.parametrize("x_freqs,scale", [(0, 2.0), (1, 1.0)])
def test_density_of_small_network_integrates_to_one(x_freqs, scale):
    # tanh with doubled init weights: bends the prior (total variation ~0.2) while
    # keeping the mass well inside the box (density ~1e-9 on its edge); with Fourier
    # features of x at init scale (doubled, they make peaks of density ~9 that this
    # grid cannot resolve: its mass then moves 1.015, 0.990, 0.999 at 100, 200, 400
    # cells a side)
    spec, theta = small_flow(3, scale=scale, activation="tanh", x_freqs=x_freqs)
    gx, gy, logp = lk.density_grid(theta, spec, lim=7.0, n_grid=100, steps=20)
    assert logp.shape == (100, 100) and gx.shape == gy.shape == (100,)
    dA = (gx[1] - gx[0]) * (gy[1] - gy[0])
    p = np.exp(logp)
    mass = p.sum() * dA
    print(f"mass on the grid: {mass:.10f}")
    assert abs(mass - 1.0) < 0.01, mass
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    tv = 0.5 * np.abs(p.ravel() - np.exp(lk.gaussian_logpdf(grid))).sum() * dA
    assert tv > 0.1, tv                                  # not the prior
    # rows are y: logp[i, j] = log p(gx[j], gy[i])
    assert np.allclose(logp[10, 60], lk.log_prob(theta, spec, [[gx[60], gy[10]]], steps=20))


def test_density_of_a_trained_model_integrates_to_one_and_sits_on_the_data():
    """The issue's check on a learned density: a small model trained briefly on
    8gaussians; its density on a grid covering the data has mass 1 within 1%, and
    most of that mass lies near the eight modes."""
    from fmnumpy import FlowMatcher
    from fmnumpy.euclidean.datasets import sample as draw
    fm = FlowMatcher(hidden=(32, 32), seed=0, lr=3e-3, warmup=20, threads=1, x_freqs=0)
    fm.fit("8gaussians", steps=600, batch_size=128)
    gx, gy, logp = fm.density_grid(lim=6.0, n_grid=90, steps=20)
    dA = (gx[1] - gx[0]) * (gy[1] - gy[0])
    p = np.exp(logp)
    mass = p.sum() * dA
    print(f"trained model: mass on the grid {mass:.5f}")
    assert abs(mass - 1.0) < 0.01, mass
    modes = draw("8gaussians", 4000, np.random.default_rng(0))
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    near = np.min(((grid[:, None, :] - modes[None, ::40, :]) ** 2).sum(-1), axis=1) < 1.0
    on_data = p.ravel()[near].sum() * dA                      # 0.76 measured
    prior = np.exp(lk.gaussian_logpdf(grid))[near].sum() * dA  # 0.41
    assert on_data > 0.6 and on_data > 1.5 * prior, (on_data, prior)


def test_user_errors():
    spec, theta = small_flow()
    x = np.zeros((3, 2))
    with pytest.raises(FmnumpyError, match="method"):
        lk.log_prob(theta, spec, x, method="rk45")
    with pytest.raises(FmnumpyError, match="shape"):
        lk.log_prob(theta, spec, np.zeros((3, 3)))
    with pytest.raises(FmnumpyError, match="NaN"):
        lk.sample_with_logprob(theta, spec, np.full((2, 2), np.nan))
    with pytest.raises(FmnumpyError, match="steps"):
        lk.log_prob(theta, spec, x, steps=0)
    with pytest.raises(FmnumpyError, match="dtype"):
        lk.log_prob(theta, spec, x, dtype="float16")
    with pytest.raises(FmnumpyError, match="lim"):
        lk.density_grid(theta, spec, lim=((1, 0), (0, 1)), n_grid=4)
    spec3 = MLPSpec(3, (4,))
    with pytest.raises(FmnumpyError, match="2-D"):
        lk.density_grid(init_params(spec3.sizes, np.random.default_rng(0)), spec3)
