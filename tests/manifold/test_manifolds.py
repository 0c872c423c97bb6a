"""Flow matching on the sphere and the torus: the manifold operations against their
defining identities, the loss gradient against float64 central differences of an
independent NumPy reference, the sampler and the likelihood against closed-form
flows, the density's total mass, and the estimator and command line
(docs/manifolds.md)."""
import json
import os
import math

import numba
import numpy as np
import pytest
from hypothesis import given, strategies as st

from fmnumpy import FlowMatcher, ManifoldFlowMatcher
from fmnumpy.manifold import datasets as mdata
from fmnumpy.manifold import solvers as msol
from fmnumpy.manifold import manifolds as mf
from fmnumpy.manifold import riemannian as rfm
from fmnumpy.nn.activations import ACTIVATIONS
from fmnumpy.errors import FmnumpyError
from fmnumpy.manifold.estimator import grid_points
from fmnumpy.manifold.metrics import geodesic_w2
from fmnumpy.nn.mlp import init_params, views
from fmnumpy.nn.mlp import StepWork

from reference import REPO  # noqa: E402
from reference import (SETTINGS, assert_grad_close, assert_one_line_error, central_diff,
                       mlp_ref, run)

SILU = ACTIVATIONS["silu"]


def sphere_points(rng, n, D):
    z = rng.standard_normal((n, D))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def points(code, rng, n, D):
    return mf.sample_prior(code, n, D, rng)


def call(fn, code, *arrays, width=None):
    """fn(code, *arrays, out) with a fresh out buffer of the first array's shape."""
    out = np.zeros(arrays[0].shape if width is None else (arrays[0].shape[0],))
    fn(code, *arrays, out)
    return out


# ---- the manifold operations --------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10**6), D=st.integers(2, 5))
def test_sphere_log_and_exp_invert_each_other_and_measure_the_distance(seed, D):
    rng = np.random.default_rng(seed)
    x, y = sphere_points(rng, 20, D), sphere_points(rng, 20, D)
    u = call(mf.logmap, mf.SPHERE, x, y)
    assert np.abs(np.sum(u * x, axis=1)).max() < 1e-12                # tangent at x
    d = call(mf.dist, mf.SPHERE, x, y, width=1)
    assert np.allclose(np.linalg.norm(u, axis=1), d, atol=1e-12)
    assert np.allclose(d, np.arccos(np.clip(np.sum(x * y, axis=1), -1, 1)), atol=1e-7)
    assert np.allclose(call(mf.expmap, mf.SPHERE, x, u), y, atol=1e-12)
    p = call(mf.proju, mf.SPHERE, x, rng.standard_normal(x.shape))
    assert np.allclose(call(mf.proju, mf.SPHERE, x, p), p, atol=1e-13)  # P^2 = P


# ---- the manifold contract: every entry of MANIFOLDS, every operation of CONTRACT ------

CONTRACT_DIMS = {"sphere": (2, 3, 5), "torus": (1, 2, 3)}


def test_contract_names_a_function_for_every_operation_and_every_manifold_is_tested():
    import importlib
    for op, (where, _) in mf.CONTRACT.items():
        module, name = where.rsplit(".", 1)
        assert callable(getattr(importlib.import_module("fmnumpy." + module), name)), op
    assert set(CONTRACT_DIMS) == set(mf.MANIFOLDS)          # a new entry needs its dimensions


@pytest.mark.parametrize("name", sorted(mf.MANIFOLDS))
def test_contract_maps_and_distance(name):
    """projx is idempotent and check_points accepts its points; proju is idempotent;
    exp_x(log_x(y)) = y; |log_x(y)| = dist(x, y) = dist(y, x); the uniform draw lies on
    the manifold."""
    code = mf.MANIFOLDS[name]
    for D in CONTRACT_DIMS[name]:
        rng = np.random.default_rng(D)
        x, y = mf.sample_prior(code, 30, D, rng), mf.sample_prior(code, 30, D, rng)
        np.testing.assert_allclose(call(mf.projx, code, x), x, atol=1e-12)
        np.testing.assert_allclose(mf.check_points(code, x), x, atol=1e-12)
        far = call(mf.projx, code, 3.0 * x + 7.0)
        np.testing.assert_allclose(call(mf.projx, code, far), far, atol=1e-12)
        u = call(mf.proju, code, x, rng.standard_normal(x.shape))
        np.testing.assert_allclose(call(mf.proju, code, x, u), u, atol=1e-12)
        log = call(mf.logmap, code, x, y)
        np.testing.assert_allclose(call(mf.proju, code, x, log), log, atol=1e-12)
        back = call(mf.expmap, code, x, log)
        assert np.abs(call(mf.dist, code, back, y, width=1)).max() < 1e-9
        d = call(mf.dist, code, x, y, width=1)
        np.testing.assert_allclose(np.linalg.norm(log, axis=1), d, atol=1e-12)
        np.testing.assert_allclose(call(mf.dist, code, y, x, width=1), d, atol=1e-12)


@pytest.mark.parametrize("name", sorted(mf.MANIFOLDS))
def test_contract_uniform_draw_has_the_density_of_the_volume(name):
    """The mean of the log-density of the prior over its own draws is -log_volume, and
    a ball's share of the draws is its share of the volume (S^2: a cap of height h
    has area 2 pi h; T^D: a box)."""
    code = mf.MANIFOLDS[name]
    D = 3 if name == "sphere" else 2
    x = mf.sample_prior(code, 200_000, D, np.random.default_rng(0))
    np.testing.assert_allclose(mf.prior_log_density(code, x), -mf.log_volume(code, D))
    if name == "sphere":
        share, want = np.mean(x[:, 2] > 0.5), 2 * math.pi * 0.5 / math.exp(mf.log_volume(code, D))
    else:
        share, want = np.mean((x < 1.0).all(axis=1)), 1.0 / math.exp(mf.log_volume(code, D))
    assert abs(share - want) < 4 * math.sqrt(want * (1 - want) / x.shape[0]), (share, want)


@pytest.mark.parametrize("name", sorted(mf.MANIFOLDS))
@pytest.mark.parametrize("K", [0, 2])
def test_contract_feature_tangents_are_the_derivatives_of_the_features(name, K):
    code = mf.MANIFOLDS[name]
    for D in CONTRACT_DIMS[name][1:]:
        rng = np.random.default_rng(K + D)
        B = 6
        x, t = mf.sample_prior(code, B, D, rng), rng.random(B)
        feats = (1, K, rfm.feature_directions(code, D))
        E = rfm.embed_width(code, D, K)
        F = E + 3

        def embed(y):
            X = np.zeros((B, F))
            rfm.manifold_features(code, y, t, feats, X)
            return X

        U = np.zeros((D, B, E))
        msol.embedding_tangents(code, embed(x), feats, U)
        for _ in range(3):             # along tangent vectors v, the only ones div_M uses
            v = call(mf.proju, code, x, rng.standard_normal((B, D)))
            dU = np.einsum("bd,dbe->be", v, U)
            fd = (embed(x + 1e-6 * v)[:, :E] - embed(x - 1e-6 * v)[:, :E]) / 2e-6
            np.testing.assert_allclose(dU, fd, atol=1e-6)


@pytest.mark.parametrize("D", [2, 3, 5])
def test_log_at_the_antipode_has_length_pi(D):
    """y = -x: log_x(y) is pi times a unit tangent, exp of it is y, and the geodesic
    ends at y on the sphere (a zero log left it at x)."""
    rng = np.random.default_rng(D)
    x = sphere_points(rng, 16, D)
    x[0] = np.eye(D)[0]                                    # on an axis
    y = -x
    u = call(mf.logmap, mf.SPHERE, x, y)
    assert np.allclose(np.linalg.norm(u, axis=1), math.pi, atol=1e-12)
    assert np.abs(np.sum(u * x, axis=1)).max() < 1e-12
    assert np.allclose(call(mf.dist, mf.SPHERE, x, y, width=1), math.pi)
    assert np.allclose(call(mf.expmap, mf.SPHERE, x, u), y, atol=1e-12)
    for t in (0.5, 1.0):
        xt, ut = np.zeros_like(x), np.zeros_like(x)
        mf.geodesic(mf.SPHERE, x, y, np.full(16, t), xt, ut)
        assert np.allclose(np.linalg.norm(xt, axis=1), 1.0, atol=1e-12)
        assert np.allclose(np.linalg.norm(ut, axis=1), math.pi, atol=1e-12)
        if t == 1.0:
            assert np.allclose(xt, y, atol=1e-12)
        else:
            assert np.abs(np.sum(xt * x, axis=1)).max() < 1e-12    # half way round


@SETTINGS
@given(seed=st.integers(0, 10**6), D=st.integers(1, 4))
def test_torus_log_and_exp_take_the_short_way_round(seed, D):
    rng = np.random.default_rng(seed)
    x = points(mf.TORUS, rng, 50, D)
    u = rng.uniform(-math.pi, math.pi, (50, D)) * 0.999
    y = call(mf.expmap, mf.TORUS, x, u)
    assert y.min() >= 0 and y.max() < 2 * math.pi
    assert np.allclose(call(mf.logmap, mf.TORUS, x, y), u, atol=1e-12)
    d = call(mf.dist, mf.TORUS, x, y, width=1)
    assert np.allclose(d, np.linalg.norm(u, axis=1), atol=1e-12)
    shifted = x + 2 * math.pi * rng.integers(-3, 4, x.shape)           # same points
    assert np.allclose(call(mf.dist, mf.TORUS, shifted, y, width=1), d, atol=1e-9)


@pytest.mark.parametrize("code,D", [(mf.SPHERE, 3), (mf.SPHERE, 2), (mf.TORUS, 2),
                                    (mf.EUCLIDEAN, 2)])
def test_geodesic_ends_at_the_data_with_the_derivative_of_its_path(code, D):
    """xt(0) = x0, xt(1) = x1, ut = d xt / dt (central differences), |ut| = d(x0, x1)."""
    rng = np.random.default_rng(3)
    x0, x1 = points(code, rng, 40, D), points(code, rng, 40, D)
    t = rng.random(40)

    def path(tt):
        xt, ut = np.zeros_like(x0), np.zeros_like(x0)
        mf.geodesic(code, x0, x1, tt, xt, ut)
        return xt, ut

    assert np.allclose(path(np.zeros(40))[0], x0, atol=1e-12)
    end = path(np.ones(40))[0]
    assert call(mf.dist, code, end, x1, width=1).max() < 1e-9
    xt, ut = path(t)
    h = 1e-6
    lo, hi = path(t - h)[0], path(t + h)[0]
    # the chord in R^D on the sphere; the short way round (logmap) on the torus
    fd = (hi - lo if code == mf.SPHERE else call(mf.logmap, code, lo, hi)) / (2 * h)
    assert np.allclose(ut, fd, atol=1e-7)
    if code == mf.SPHERE:
        assert np.abs(np.linalg.norm(xt, axis=1) - 1).max() < 1e-12
        assert np.abs(np.sum(xt * ut, axis=1)).max() < 1e-12
    if code != mf.EUCLIDEAN:
        assert np.allclose(np.linalg.norm(ut, axis=1), call(mf.dist, code, x0, x1, width=1))


def test_sphere_geodesic_is_slerp():
    """The written form cos(tw) x0 + sin(tw) e against the textbook slerp
    (sin((1 - t) w) x0 + sin(t w) x1) / sin w."""
    rng = np.random.default_rng(4)
    x0, x1 = sphere_points(rng, 30, 4), sphere_points(rng, 30, 4)
    t = rng.random(30)
    xt, ut = np.zeros_like(x0), np.zeros_like(x0)
    mf.geodesic(mf.SPHERE, x0, x1, t, xt, ut)
    w = np.arccos(np.sum(x0 * x1, axis=1))[:, None]
    tt = t[:, None]
    slerp = (np.sin((1 - tt) * w) * x0 + np.sin(tt * w) * x1) / np.sin(w)
    dslerp = w * (-np.cos((1 - tt) * w) * x0 + np.cos(tt * w) * x1) / np.sin(w)
    assert np.allclose(xt, slerp, atol=1e-12)
    assert np.allclose(ut, dslerp, atol=1e-10)


def test_prior_and_volume():
    rng = np.random.default_rng(0)
    x = points(mf.SPHERE, rng, 20000, 3)
    assert np.abs(x.mean(axis=0)).max() < 0.02                      # no preferred side
    assert math.isclose(math.exp(mf.log_volume(mf.SPHERE, 3)), 4 * math.pi)
    assert math.isclose(math.exp(mf.log_volume(mf.SPHERE, 2)), 2 * math.pi)
    assert math.isclose(math.exp(mf.log_volume(mf.TORUS, 2)), 4 * math.pi ** 2)


# ---- the loss and its gradient --------------------------------------------------------

def embed_ref(code, x, K):
    if code == mf.TORUS:
        return np.concatenate([f(h * x) for h in range(1, K + 2) for f in (np.cos, np.sin)],
                              axis=1)
    y = x / np.linalg.norm(x, axis=1, keepdims=True) if code == mf.SPHERE else x
    D = x.shape[1]
    dirs = [np.eye(D)[a] for a in range(D)] + [
        (np.eye(D)[a] + s * np.eye(D)[b]) / math.sqrt(2)
        for a in range(D) for b in range(a + 1, D) for s in (1, -1)]
    cols = [y]
    for k in range(K):
        for bj in dirs:
            p = np.pi * 2.0 ** k * (y @ bj)
            cols += [np.sin(p)[:, None], np.cos(p)[:, None]]
    return np.concatenate(cols, axis=1)


def path_ref(code, x0, x1, t):
    """The geodesic by the textbook formulas (slerp; the wrapped straight line)."""
    tt = t[:, None]
    if code == mf.SPHERE:
        w = np.arccos(np.clip(np.sum(x0 * x1, axis=1), -1, 1))[:, None]
        xt = (np.sin((1 - tt) * w) * x0 + np.sin(tt * w) * x1) / np.sin(w)
        ut = w * (-np.cos((1 - tt) * w) * x0 + np.cos(tt * w) * x1) / np.sin(w)
        return xt, ut
    u = np.mod(x1 - x0 + math.pi, 2 * math.pi) - math.pi
    return np.mod(x0 + tt * u, 2 * math.pi), u


def loss_ref(theta, sizes, n_freq, K, code, x0, x1, t):
    xt, ut = path_ref(code, x0, x1, t)
    e = embed_ref(code, xt, K)
    cols = [e, t[:, None]]
    for k in range(n_freq):
        cols += [np.sin(np.pi * 2.0 ** k * t)[:, None], np.cos(np.pi * 2.0 ** k * t)[:, None]]
    m = mlp_ref(theta, sizes, SILU, np.concatenate(cols, axis=1))[0]
    if code == mf.SPHERE:
        y = e[:, :x0.shape[1]]
        m = m - np.sum(m * y, axis=1, keepdims=True) * y                # P(xt) m
    return np.mean((m - ut) ** 2)


@SETTINGS
@given(seed=st.integers(0, 10**6), sphere=st.booleans(), D=st.integers(2, 4),
       B=st.integers(1, 6), hidden=st.lists(st.integers(1, 7), min_size=1, max_size=3),
       n_freq=st.integers(0, 2), K=st.integers(0, 2))
def test_loss_and_gradient_match_the_reference_and_finite_differences(seed, sphere, D, B,
                                                                      hidden, n_freq, K):
    code = mf.SPHERE if sphere else mf.TORUS
    rng = np.random.default_rng(seed)
    sizes = rfm.net_sizes(code, D, hidden, n_freq, K)
    theta = init_params(sizes, rng, np.float64) * 2.0
    x0, x1, t = points(code, rng, B, D), points(code, rng, B, D), rng.uniform(0.05, 0.95, B)
    net = (code, sizes, SILU, (n_freq, K, rfm.feature_directions(code, D)))
    work = StepWork(sizes, B, np.float64).buffers()
    dtheta = np.zeros_like(theta)
    loss = rfm.loss_and_grad(theta, dtheta, net, (x0, x1, t), work)
    assert loss == pytest.approx(loss_ref(theta, sizes, n_freq, K, code, x0, x1, t), rel=1e-10)
    th = theta.copy()
    fd = central_diff(lambda: loss_ref(th, sizes, n_freq, K, code, x0, x1, t), th)
    assert_grad_close("dL/dtheta", dtheta, fd, rtol=1e-6)


def test_velocity_is_tangent_and_constant_along_rays():
    fm = tiny_model("sphere")
    rng = np.random.default_rng(0)
    x = sphere_points(rng, 50, 3)
    v = fm.velocity(x, 0.3)
    assert np.abs(np.sum(v * x, axis=1)).max() < 1e-5
    out = np.zeros_like(x)
    msol.flow_field(msol.solver_params(fm.state_.ema, fm._net(), 50, False), 3.0 * x,
                    np.full(50, 0.3), out)
    assert np.allclose(out, v, atol=1e-5)


# ---- closed-form flows: a network whose output is a constant -------------------------

def constant_field_model(manifold, a):
    """A model whose MLP outputs the constant a (last layer W = 0, b = a): on the sphere
    v = P(x) a = a - (a . x) x, the gradient of a . x; on the torus v = a."""
    fm = ManifoldFlowMatcher(manifold, hidden=(4,))
    fm._init_state(len(a))
    W, b = views(fm.state_.ema, fm.sizes_)[-1]
    W[...] = 0.0
    b[...] = a
    return fm


def sphere_gradient_flow(x0, a, t):
    """The exact flow of v = a - (a . x) x: x stays on the great circle through x0 and
    a^, at the angle phi from a^ with tan(phi / 2) = tan(phi0 / 2) e^(-|a| t)."""
    c = np.linalg.norm(a)
    ah = a / c
    cos0 = x0 @ ah
    phi = 2 * np.arctan(np.tan(np.arccos(cos0) / 2) * np.exp(-c * t))
    perp = x0 - cos0[:, None] * ah
    perp /= np.linalg.norm(perp, axis=1, keepdims=True)
    return np.cos(phi)[:, None] * ah + np.sin(phi)[:, None] * perp


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("heun", 2),
                                          ("rk4", 4)])
def test_sampler_stays_on_the_sphere_and_keeps_its_order(method, order):
    a = np.array([0.3, -0.8, 1.1])
    fm = constant_field_model("sphere", a)
    x0 = sphere_points(np.random.default_rng(1), 64, 3)
    exact = sphere_gradient_flow(x0, a, 1.0)
    errs = []
    for steps in (8, 16):
        x = msol.integrate(fm.state_.ema.astype(np.float64), fm._net(), x0, method, steps)
        assert np.abs(np.linalg.norm(x, axis=1) - 1).max() < 1e-13
        errs.append(np.abs(x - exact).max())
    ratio = errs[0] / errs[1]
    print(f"{method}: errors {errs}, ratio {ratio:.2f} (2^p = {2 ** order})")
    assert 0.75 * 2 ** order < ratio < 1.4 * 2 ** order


def test_log_prob_of_the_gradient_flow_is_exact():
    """div_M (P a) = -(D - 1) (a . x), so along the flow log p1 = -log 4 pi +
    2 int_0^1 (a . x_t) dt, in closed form with cos(phi_t) = tanh(|a| t - log T0)."""
    a = np.array([0.5, 0.9, -0.4])
    c = np.linalg.norm(a)
    fm = constant_field_model("sphere", a)
    x1 = sphere_points(np.random.default_rng(2), 40, 3)
    logp = fm.log_prob(x1, steps=40, dtype="float64")          # the oracle
    phi1 = np.arccos(x1 @ a / c)
    lnT0 = np.log(np.tan(phi1 / 2)) + c                      # tan(phi0/2) = tan(phi1/2) e^c
    exact = -math.log(4 * math.pi) + 2 * (np.log(np.cosh(c - lnT0)) - np.log(np.cosh(lnT0)))
    assert np.abs(logp - exact).max() < 1e-7


def test_torus_constant_flow_and_uniform_density():
    a = np.array([1.3, -4.0])
    fm = constant_field_model("torus", a)
    x0 = points(mf.TORUS, np.random.default_rng(3), 30, 2)
    x = msol.integrate(fm.state_.ema.astype(np.float64), fm._net(), x0, "rk4", 7)
    assert np.allclose(x, np.mod(x0 + a, 2 * math.pi), atol=1e-12)
    assert np.allclose(fm.log_prob(x, steps=5, dtype="float64"), -2 * math.log(2 * math.pi),
                       atol=1e-12)


# ---- the divergence and the density --------------------------------------------------

@pytest.mark.parametrize("code,D,K", [(mf.MANIFOLDS[name], D, K) for name in sorted(mf.MANIFOLDS)
                                      for D, K in zip(CONTRACT_DIMS[name][1:], (0, 2))]
                         + [(mf.EUCLIDEAN, 2, 1)])
def test_riemannian_divergence_matches_finite_differences(code, D, K):
    """div_M v = the ambient divergence of the field's extension that is constant
    along rays (sphere: at |x| = 1 its trace is tr(P J P)); the flat torus's is
    sum_d dv_d / dx_d."""
    rng = np.random.default_rng(5)
    sizes = rfm.net_sizes(code, D, (12, 12), 1, K)
    theta = init_params(sizes, rng, np.float64) * 2.5
    net = (code, sizes, SILU, (1, K, rfm.feature_directions(code, D)))
    B = 9
    x, t = points(code, rng, B, D), rng.random(B)
    v, div = np.zeros((B, D)), np.zeros(B)
    msol.net_div_field(msol.solver_params(theta, net, B, True)[:7], x, t, v, div)

    def field(y):
        out = np.zeros((B, D))
        msol.flow_field(msol.solver_params(theta, net, B, False), y, t, out)
        return out

    assert np.allclose(v, field(x), atol=1e-12)
    fd = np.zeros(B)
    for d in range(D):
        e = np.zeros(D)
        e[d] = 1e-5
        fd += (field(x + e)[:, d] - field(x - e)[:, d]) / 2e-5
    print("max |div - FD|", np.abs(div - fd).max())
    assert np.allclose(div, fd, atol=1e-7)


@pytest.mark.parametrize("manifold", ["sphere", "torus"])
@pytest.mark.parametrize("x_freqs,scale", [(0, 2.5), (2, 1.5)])
def test_density_of_an_untrained_flow_integrates_to_one(manifold, x_freqs, scale):
    """Any flow from the uniform prior carries a density: exp(log p) summed over an
    equal-area grid is 1 (midpoint rule), here for strongly nonlinear random nets."""
    fm = ManifoldFlowMatcher(manifold, hidden=(32, 32), x_freqs=x_freqs, seed=1)
    fm._init_state(3 if manifold == "sphere" else 2)
    fm.state_.ema[:] *= scale
    a, b, logp, area = fm.density_grid(n_grid=40, steps=20)
    assert logp.max() - logp.min() > 1.0                        # far from uniform
    mass = np.exp(logp).sum() * area
    assert abs(mass - 1) < 0.01, mass



@pytest.mark.parametrize("manifold", ["sphere", "torus"])
def test_float32_likelihood_is_the_oracle_within_1e4_nats_on_any_threads(manifold):
    """log_prob's default (float32 passes, float64 state) against the float64 oracle,
    and the particles split into chunks on 2 threads against one chunk on 1: the rows
    are solved independently, so the chunks change only the float32 rounding of the
    matrix products (BLAS blocks by the number of rows)."""
    fm = ManifoldFlowMatcher(manifold, hidden=(32, 32), x_freqs=2, seed=1, threads=1)
    D = 3 if manifold == "sphere" else 2
    fm._init_state(D)
    fm.state_.ema[:] *= 1.5
    x = points(mf.MANIFOLDS[manifold], np.random.default_rng(4), 300, D)
    oracle = fm.log_prob(x, steps=20, dtype="float64")
    one = fm.log_prob(x, steps=20)
    assert one.std() > 0.1                                          # far from uniform
    assert np.abs(one - oracle).max() < 1e-4
    threads = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:                                                 # 5 chunks of 60 on the threads
        chunked = msol.log_prob(fm.state_.ema, fm._net(), x, "rk4", 20, chunk=64,
                                dtype=np.float32)
    finally:
        numba.set_num_threads(threads)
    assert np.abs(chunked - one).max() < 1e-5
@pytest.mark.parametrize("name", list(mdata.DATASETS))
def test_datasets_lie_on_their_manifold_and_their_densities_integrate_to_one(name):
    code, D = mdata.DATASETS[name][:2]
    x = mdata.sample(name, 5000, np.random.default_rng(0))
    assert x.shape == (5000, D)
    mf.check_points(code, x, D)
    assert np.isfinite(mdata.log_density(name, x)).all()          # in the support
    _, _, pts, area = grid_points(code, 200)
    assert abs(np.exp(mdata.log_density(name, pts)).sum() * area - 1) < 0.01


def test_vmf_blobs_have_the_right_spread():
    """For a vMF on S^2, E[mu . x] = coth(kappa) - 1 / kappa."""
    x = mdata.sample("vmf", 20000, np.random.default_rng(1))
    mu = mdata._vmf_means()
    near = np.max(x @ mu.T, axis=1)
    k = mdata.VMF_KAPPA
    assert near.mean() == pytest.approx(1 / math.tanh(k) - 1 / k, abs=2e-3)


# ---- the geodesic W2 -------------------------------------------------------------------

def test_geodesic_w2_is_the_best_permutation():
    import itertools
    rng = np.random.default_rng(6)
    for manifold, code, D in (("sphere", mf.SPHERE, 3), ("torus", mf.TORUS, 2)):
        a, b = points(code, rng, 6, D), points(code, rng, 6, D)
        best = min(np.mean([call(mf.dist, code, a[i:i + 1], b[[p[i]]], width=1)[0] ** 2
                            for i in range(6)]) for p in itertools.permutations(range(6)))
        assert geodesic_w2(a, b, manifold) == pytest.approx(math.sqrt(best), rel=1e-12)
        assert geodesic_w2(a, a, manifold) == 0.0


def test_ot_coupling_pairs_by_the_least_geodesic_cost():
    import itertools
    from fmnumpy.manifold.estimator import geodesic_ot_pairs
    rng = np.random.default_rng(9)
    x0, x1 = points(mf.SPHERE, rng, 6, 3), points(mf.SPHERE, rng, 6, 3)
    C = np.empty((6, 6))
    pi = geodesic_ot_pairs(mf.SPHERE, x0, x1, C)
    cost = lambda p: sum(C[i, p[i]] for i in range(6))       # noqa: E731
    assert cost(pi) == pytest.approx(min(cost(p) for p in itertools.permutations(range(6))))
    fm = ManifoldFlowMatcher("sphere", hidden=(8,), coupling="ot").fit(steps=5, batch_size=16)
    assert np.isfinite(fm.state_.losses).all()


def test_geodesic_w2_of_a_rotation():
    """Rotating every point by alpha about the z axis moves each by at most alpha."""
    x = mdata.sample("vmf", 500, np.random.default_rng(7))
    al = 0.05
    R = np.array([[math.cos(al), -math.sin(al), 0], [math.sin(al), math.cos(al), 0], [0, 0, 1]])
    w = geodesic_w2(x, x @ R.T, "sphere")
    assert 0 < w <= al
    y = mdata.sample("wrapped_gmm", 500, np.random.default_rng(8))
    assert geodesic_w2(y, np.mod(y + [0.1, 0.0], 2 * math.pi), "torus") <= 0.1 + 1e-12


# ---- bad input -------------------------------------------------------------------------

def test_bad_points_name_the_first_bad_row():
    x = sphere_points(np.random.default_rng(0), 6, 3)
    x[3] *= 1.1
    x[5] *= 2
    with pytest.raises(FmnumpyError, match="row 3 is not on the unit sphere"):
        mf.check_points(mf.SPHERE, x)
    y = np.zeros((4, 2))
    y[2, 1] = np.nan
    with pytest.raises(FmnumpyError, match="row 2 is not finite"):
        mf.check_points(mf.TORUS, y)
    with pytest.raises(FmnumpyError, match="D = 2 columns, the sphere model 3"):
        mf.check_points(mf.SPHERE, x[:, :2] / np.linalg.norm(x[:, :2], axis=1)[:, None], 3)
    with pytest.raises(FmnumpyError, match="need D >= 2"):
        mf.check_points(mf.SPHERE, np.ones((3, 1)))
    with pytest.raises(FmnumpyError, match="unknown manifold 'hyperbolic'"):
        ManifoldFlowMatcher("hyperbolic")
    with pytest.raises(FmnumpyError, match="lives on the torus"):
        ManifoldFlowMatcher("sphere").fit("wrapped_gmm", steps=1)
    with pytest.raises(FmnumpyError, match="'sigma'.*ManifoldFlowMatcher takes"):
        ManifoldFlowMatcher("sphere").set_params(sigma=0.1)
    with pytest.raises(FmnumpyError, match="unknown coupling 'sinkhorn' on a manifold"):
        ManifoldFlowMatcher("torus", coupling="sinkhorn")
    fm = tiny_model("sphere")
    with pytest.raises(FmnumpyError, match="row 1 is not on the unit sphere"):
        fm.log_prob([[1.0, 0, 0], [0.5, 0, 0]])


# ---- the estimator ---------------------------------------------------------------------

_MODELS = {}


def tiny_model(manifold, steps=300):
    key = (manifold, steps)
    if key not in _MODELS:
        fm = ManifoldFlowMatcher(manifold, hidden=(32, 32), warmup=20, seed=1)
        if steps:
            fm.fit(steps=steps, batch_size=128)
        else:
            fm._init_state(3 if manifold == "sphere" else 2)
        _MODELS[key] = fm
    return _MODELS[key]


def test_training_lowers_the_loss_and_samples_lie_on_the_manifold():
    for manifold in ("sphere", "torus"):
        fm = tiny_model(manifold)
        losses = fm.state_.losses
        assert np.mean(losses[-50:]) < np.mean(losses[:50])
        x = fm.sample(500, seed=3)
        if manifold == "sphere":
            assert np.abs(np.linalg.norm(x.astype(np.float64), axis=1) - 1).max() < 1e-6
        else:
            assert x.min() >= 0 and x.max() < 2 * math.pi
        assert np.array_equal(x, fm.sample(500, seed=3))                # seeded


@pytest.mark.parametrize("manifold,data", [("sphere", "vmf"), ("torus", "wrapped_gmm")])
def test_a_trained_model_reaches_the_data(manifold, data):
    """Quality, not only a falling loss: 2,000 steps of a 2 x 64 network put its
    samples near the data floor (measured: W2 1.10x and 1.00x the floor, KL 0.36 and
    0.27 nats) where the untrained flow is at 2.8x and 1.6 to 1.8 nats."""
    fm = ManifoldFlowMatcher(manifold, hidden=(64, 64), seed=0)
    fm.fit(data, steps=2000, batch_size=128)
    m = fm.evaluate(n=1000, pairs=5, logp_n=500)
    assert m["w2_ratio"] < 1.35, m
    assert m["kl"] < 0.6, m


def test_fit_on_user_points_and_save_load_round_trip(tmp_path):
    x = mdata.sample("vmf", 300, np.random.default_rng(0))
    fm = ManifoldFlowMatcher("sphere", hidden=(16,), warmup=0).fit(x, steps=30)
    path = fm.save(tmp_path / "m.npz")
    back = ManifoldFlowMatcher.load(path)
    assert np.array_equal(back.sample(50), fm.sample(50))
    with pytest.raises(FmnumpyError, match="flow matching on a manifold"):
        FlowMatcher.load(path)


def test_a_resumed_run_continues_bit_for_bit(tmp_path):
    kw = dict(hidden=(16,), warmup=10)
    whole = ManifoldFlowMatcher("torus", **kw).fit(steps=40, batch_size=32)
    half = ManifoldFlowMatcher("torus", **kw).fit(steps=40, batch_size=32, until=20)
    half = ManifoldFlowMatcher.load(half.save(tmp_path / "h.npz"))
    assert half.state_.step == 20
    half.fit(steps=40, batch_size=32, warm_start=True)
    assert np.array_equal(half.state_.buf, whole.state_.buf)


def test_evaluate_reports_w2_against_its_floor():
    m = tiny_model("torus").evaluate(n=300, pairs=3, logp_n=100)
    assert m["w2"] > 0 and m["w2_floor"] > 0 and m["w2_ratio"] == m["w2"] / m["w2_floor"]
    assert 0 <= m["angle_min"] <= m["angle_max"] < 2 * math.pi
    assert m["logp"] < m["logp_data"] + 0.5


# ---- the command line --------------------------------------------------------------------

def test_cli_trains_on_the_torus_and_uses_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "t"
    assert run(["train", "--manifold", "torus", "--dataset", "torus_checkerboard",
                "--steps", 60, "--hidden", "16,16", "--out", out, "--no-progress"]) == 0
    for f in ("checkpoint.npz", "samples.png", "flow.gif", "density.png", "loss.png",
              "samples.npy"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    assert abs(m["density_mass"] - 1) < 0.01 and m["steps"] == 60
    assert 0 <= m["angle_min"] and m["angle_max"] < 2 * math.pi
    ck = out / "checkpoint.npz"
    assert run(["sample", "--checkpoint", ck, "-n", 100, "--out", tmp_path / "x.npy",
                "--steps", 10, "--log-prob", tmp_path / "l.npy"]) == 0
    assert np.load(tmp_path / "x.npy").shape == (100, 2)
    assert np.isfinite(np.load(tmp_path / "l.npy")).all()
    assert run(["evaluate", "--checkpoint", ck, "-n", 200, "--steps", 10]) == 0
    assert "w2_ratio" in capsys.readouterr().out
    assert run(["animate", "--checkpoint", ck, "-n", 100, "--steps", 10, "--frames", 5,
                "--out", tmp_path / "f.gif"]) == 0
    assert run(["density", "--checkpoint", ck, "--grid", 10, "--steps", 5,
                "--out", tmp_path / "d.png"]) == 0
    capsys.readouterr()
    assert run(["train", "--steps", 80, "--out", out, "--resume", "--no-progress",
                "--no-plots"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 80


@pytest.mark.parametrize("argv,words", [
    (["--manifold", "sphere", "--path", "sb"], ("--path", "manifold")),
    (["--manifold", "torus", "--dataset", "vmf"], ("lives on the sphere",)),
    (["--manifold", "sphere", "--device", "cuda"], ("--device", "flow matching on R^D")),
    (["--manifold", "sphere", "--vocab-size", "8"], ("--vocab-size", "discrete", "does not")),
    (["--dataset", "vmf", "--discrete"], ("pick one",)),
])
def test_cli_bad_manifold_options_are_one_line(tmp_path, capsys, argv, words):
    code = run(["train", *argv, "--steps", 5, "--out", tmp_path / "o", "--no-progress"])
    assert_one_line_error(capsys, code, *words)


def test_cli_bad_points_file_is_one_line(tmp_path, capsys):
    x = sphere_points(np.random.default_rng(0), 10, 3)
    x[4] *= 3
    np.save(tmp_path / "p.npy", x)
    code = run(["train", "--manifold", "sphere", "--data", tmp_path / "p.npy", "--steps", 5,
                "--out", tmp_path / "o", "--no-progress"])
    assert_one_line_error(capsys, code, "row 4", "unit sphere")


# ---- latitude and longitude ------------------------------------------------------------------

EARTH = os.path.join(REPO, "..", "shared", "data", "earth")


def test_latlon_and_the_sphere_round_trip():
    np.testing.assert_allclose(mdata.latlon_to_sphere([90.0, 0.0, 0.0, -45.0], [0.0, 0.0, 90.0, 180.0]),
                               [[0, 0, 1], [1, 0, 0], [0, 1, 0],
                                [-math.sqrt(0.5), 0, -math.sqrt(0.5)]], atol=1e-12)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-89.9, 89.9, 200), rng.uniform(-180, 180, 200)
    x = mdata.latlon_to_sphere(lat, lon)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    back = mdata.sphere_to_latlon(x)
    np.testing.assert_allclose(back[0], lat, atol=1e-9)
    np.testing.assert_allclose(back[1], lon, atol=1e-9)
    np.testing.assert_allclose(mdata.latlon_to_sphere(lat, lon + 360.0), x, atol=1e-12)


@pytest.mark.parametrize("text,rows", [
    ("# a source\nLatitude,Longitude\n-30.2,-178.47\n30.78,130.28\n\n11.9,-86.1\n", 3),
    ("-25.088,152.358\n-30.087,150.998\n", 2),
    ("lat,long\n# a comment after the header\n1,2\n3,4\n", 2),
])
def test_read_latlon_takes_headers_comments_and_blank_lines(tmp_path, text, rows):
    path = tmp_path / "e.csv"
    path.write_text(text)
    lat, lon = mdata.read_latlon(path)
    assert lat.shape == lon.shape == (rows,)
    assert -90 <= lat.min() and lat.max() <= 90


@pytest.mark.parametrize("text,words", [
    ("1,2\n95,3\n", ("line 2", "latitude 95", "[-90, 90]")),
    ("1,2\n3,400\n", ("line 2", "longitude 400")),
    ("# c\n1,2\n3,abc\n", ("line 3", "not two numbers")),
    ("1,2,3\n4,5,6\n", ("line 1", "3 values")),
    ("lat,lon\n1,2\n", ("1 rows", "at least 2")),
    ("1,2\nnan,3\n", ("line 2", "not finite")),
])
def test_read_latlon_names_the_bad_line(tmp_path, text, words):
    path = tmp_path / "e.csv"
    path.write_text(text)
    with pytest.raises(FmnumpyError) as e:
        mdata.read_latlon(path)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.skipif(not os.path.isdir(EARTH), reason="the earth catalogues are not beside the repository")
@pytest.mark.parametrize("name,rows", [("volerup", 827), ("quakes_all", 6120), ("flood", 4875),
                                       ("fire", 12809)])
def test_the_earth_catalogues_load_onto_the_sphere(name, rows):
    x = mdata.latlon_to_sphere(*mdata.read_latlon(os.path.join(EARTH, name + ".csv")))
    assert x.shape == (rows, 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)


def test_cli_trains_on_latitudes_and_longitudes(tmp_path, capsys):
    rng = np.random.default_rng(3)
    path = tmp_path / "events.csv"
    pts = np.c_[rng.normal(40, 5, 300), rng.normal(-100, 10, 300)]
    path.write_text("# events\nlat,lon\n" + "\n".join(f"{a:.3f},{b:.3f}" for a, b in pts))
    out = tmp_path / "o"
    code = run(["train", "--data", path, "--latlon", "--steps", 20, "--hidden", "8",
                "--no-plots", "--no-progress", "--out", out])
    err = capsys.readouterr().err
    assert code == 0, err
    fm = ManifoldFlowMatcher.load(out / "checkpoint.npz")
    assert fm.manifold == "sphere" and fm.dim_ == 3 and fm.state_.step == 20
    for argv, words in ((["--latlon"], ("--data FILE",)),
                        (["--latlon", "--manifold", "torus", "--data", path], ("sphere",)),
                        (["--latlon", "--discrete", "--data", path], ("--latlon", "manifold"))):
        code = run(["train", *argv, "--steps", 1, "--out", tmp_path / "x", "--no-progress"])
        assert_one_line_error(capsys, code, *words)


def test_cli_preset_sets_what_was_not_given(tmp_path, capsys):
    """--preset earth fills the options not given (x_freqs from the preset, the steps
    given win); with --resume or under another family it is one line."""
    from fmnumpy.manifold.presets import PRESETS, preset
    model_args, run_args = preset("earth")
    assert {**model_args, **run_args} == PRESETS["earth"] and "steps" in run_args
    rng = np.random.default_rng(4)
    path = tmp_path / "events.csv"
    path.write_text("\n".join(f"{a:.3f},{b:.3f}" for a, b in
                              np.c_[rng.normal(-20, 5, 200), rng.normal(150, 10, 200)]))
    out = tmp_path / "o"
    code = run(["train", "--data", path, "--latlon", "--preset", "earth", "--steps", 10,
                "--hidden", "8", "--no-plots", "--no-progress", "--out", out])
    err = capsys.readouterr().err
    assert code == 0, err
    fm = ManifoldFlowMatcher.load(out / "checkpoint.npz")
    assert fm.x_freqs == model_args["x_freqs"] != ManifoldFlowMatcher().x_freqs
    assert fm.state_.step == 10 and fm.hidden == (8,)
    for argv, words in ((["--resume", "--out", out], ("--resume", "drop --preset")),
                        (["--discrete", "--out", tmp_path / "d"], ("--preset", "discrete"))):
        code = run(["train", "--preset", "earth", *argv, "--steps", 20, "--no-progress"])
        assert_one_line_error(capsys, code, *words)
    with pytest.raises(FmnumpyError, match="unknown preset 'moon'; choose one of: earth"):
        preset("moon")
