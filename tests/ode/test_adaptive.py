"""Tests for fmnumpy.adaptive: the DOPRI5 tableau checked exactly against the
order conditions, the controller on problems with closed-form solutions
(dx/dt = A x, the Gaussian flow), its work against RK4 at equal error, and its
failure modes.  B particles, D state dimension."""
from fractions import Fraction as Fr

import numpy as np
import pytest
from numba import njit

from fmnumpy.ode.adaptive import DOPRI5, SolveStats, dopri5
from fmnumpy.euclidean.integrate import dopri5_mlp
from fmnumpy.errors import FmnumpyError
from fmnumpy.euclidean.likelihood import (augmented, gaussian_field, gaussian_logpdf,
    sample_with_logprob)
from fmnumpy.nn.mlp import MLPSpec, init_params
from fmnumpy.ode.solvers import TABLEAUS, rk_integrate

# ---- the tableau, in exact arithmetic ------------------------------------------------

def _order_conditions(b, A, c):
    """sum_i b_i Phi_i(tree) - 1/gamma(tree) for every rooted tree up to order 5
    (Hairer, Norsett & Wanner I, table II.2.1), as {order: [residuals]}."""
    S = len(b)

    def dot(u, v):
        return sum(ui * vi for ui, vi in zip(u, v))

    def Am(v):
        return [sum(A[i][j] * v[j] for j in range(len(A[i]))) for i in range(S)]

    def mul(*vs):
        return [np.prod([v[i] for v in vs]) for i in range(S)]

    one = [Fr(1)] * S
    Ac, c2 = Am(c), mul(c, c)
    return {
        1: [dot(b, one) - 1],
        2: [dot(b, c) - Fr(1, 2)],
        3: [dot(b, c2) - Fr(1, 3), dot(b, Ac) - Fr(1, 6)],
        4: [dot(b, mul(c2, c)) - Fr(1, 4), dot(b, mul(c, Ac)) - Fr(1, 8),
            dot(b, Am(c2)) - Fr(1, 12), dot(b, Am(Ac)) - Fr(1, 24)],
        5: [dot(b, mul(c2, c2)) - Fr(1, 5), dot(b, mul(c2, Ac)) - Fr(1, 10),
            dot(b, mul(c, Am(c2))) - Fr(1, 15), dot(b, mul(c, Am(Ac))) - Fr(1, 30),
            dot(b, mul(Ac, Ac)) - Fr(1, 20), dot(b, Am(mul(c2, c))) - Fr(1, 20),
            dot(b, Am(mul(c, Ac))) - Fr(1, 40), dot(b, Am(Am(c2))) - Fr(1, 60),
            dot(b, Am(Am(Ac))) - Fr(1, 120)],
    }


def test_dopri5_tableau_is_exact_5th_order_with_4th_order_estimate():
    tab = DOPRI5
    A, c = tab.A_exact, tab.c_exact
    assert all(isinstance(x, Fr) for x in tab.b_exact + tab.b_low_exact + c)
    for i, row in enumerate(A):                        # consistency: c_i = sum_j a_ij
        assert sum(row, Fr(0)) == c[i]
    high = _order_conditions(tab.b_exact, A, c)
    low = _order_conditions(tab.b_low_exact, A, c)
    assert all(r == 0 for p in range(1, 6) for r in high[p])
    assert all(r == 0 for p in range(1, 5) for r in low[p])
    assert any(r != 0 for r in low[5])                 # the estimate is exactly 4th order
    assert tab.fsal and tab.order == 5 and tab.order_low == 4
    assert np.array_equal(tab.e, np.array([float(x) for x in tab.e_exact]))


# ---- dx/dt = A x: x(t) = expm(A t) x0 in closed form ---------------------------------

@njit(cache=True)
def linear_field(params, x, t, out):
    """out = x M^T for params = (M,), i.e. dx/dt = M x per particle."""
    M, = params
    B, D = x.shape
    for p in range(B):
        for i in range(D):
            acc = 0.0
            for j in range(D):
                acc += M[i, j] * x[p, j]
            out[p, i] = acc


DECAY, FREQ = 0.5, 3.0
M_SPIRAL = np.array([[-DECAY, FREQ], [-FREQ, -DECAY]])


def spiral_exact(x0, t):
    """expm(M t) x0 for M = [[-a, w], [-w, -a]]: a decaying rotation."""
    ct, st = np.cos(FREQ * t), np.sin(FREQ * t)
    R = np.exp(-DECAY * t) * np.array([[ct, st], [-st, ct]])
    return x0 @ R.T


X0 = np.random.default_rng(0).standard_normal((6, 2))


@pytest.mark.parametrize("norm", ["rms", "max"])
@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8, 1e-10])
def test_meets_tolerance_on_linear_system(tol, norm):
    x, st = dopri5(linear_field, (M_SPIRAL,), X0, 0.0, 2.0, rtol=tol, atol=tol, norm=norm)
    err = np.abs(x - spiral_exact(X0, 2.0)).max()
    # global error after about one turn: a small multiple of the local tolerance
    assert err < 5 * tol, (tol, norm, err)
    assert st.nfe == 2 + 6 * (st.accepted + st.rejected)   # f(x0), the h0 probe, 6 per step


def test_error_falls_with_tolerance_and_backward_solve_inverts():
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        x, _ = dopri5(linear_field, (M_SPIRAL,), X0, 0.0, 2.0, rtol=tol, atol=tol)
        errs.append(np.abs(x - spiral_exact(X0, 2.0)).max())
    assert errs[0] > 30 * errs[1] > 900 * errs[2]
    x1 = spiral_exact(X0, 2.0)
    xb, st = dopri5(linear_field, (M_SPIRAL,), x1, 2.0, 0.0, rtol=1e-9, atol=1e-9)
    assert np.abs(xb - X0).max() < 1e-7 and st.accepted > 0


def test_rejects_an_oversized_first_step_and_recovers():
    x, st = dopri5(linear_field, (M_SPIRAL,), X0, 0.0, 2.0, rtol=1e-8, atol=1e-8, h0=2.0)
    assert st.rejected >= 1
    assert st.nfe == 1 + 6 * (st.accepted + st.rejected)   # no h0 probe
    assert np.abs(x - spiral_exact(X0, 2.0)).max() < 5e-8


def test_fewer_evaluations_than_rk4_at_equal_error():
    """RK4's steps are searched until it matches DOPRI5's error; compare NFE."""
    tab = TABLEAUS["rk4"]
    B, D = X0.shape
    exact = spiral_exact(X0, 2.0)

    def rk4_err(n):
        x = X0.copy()
        rk_integrate(linear_field, (M_SPIRAL,), x, (0.0, 2.0, n), (tab.c, tab.A, tab.b),
                     (np.zeros((4, B, D)), np.zeros((B, D)), np.zeros(B)),
                     (np.empty((0, B, D)), np.zeros(0, dtype=np.int64)))
        return np.abs(x - exact).max()

    for tol in (1e-6, 1e-9):
        x, st = dopri5(linear_field, (M_SPIRAL,), X0, 0.0, 2.0, rtol=tol, atol=tol)
        err = np.abs(x - exact).max()
        hi = 1
        while rk4_err(hi) > err:
            hi *= 2
        lo = hi // 2                                    # rk4_err(lo) > err >= rk4_err(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if rk4_err(mid) > err else (lo, mid)
        print(f"tol {tol:g}: dopri5 err {err:.2e} NFE {st.nfe}; rk4 {hi} steps NFE {4 * hi}")
        assert st.nfe < 4 * hi


# ---- the Gaussian flow (closed form, docs/likelihood.md) -----------------------------

def test_meets_tolerance_on_gaussian_flow():
    mu, s = np.array([1.0, -0.5]), 0.5
    x0 = np.random.default_rng(1).standard_normal((8, 2))
    state = np.concatenate([x0, gaussian_logpdf(x0)[:, None]], axis=1)
    aparams = ((mu, s), np.zeros((8, 2)), np.zeros((8, 2)), np.zeros(8))
    for tol in (1e-5, 1e-8):
        out, _ = dopri5(augmented(gaussian_field), aparams, state, 0.0, 1.0, tol, tol)
        x1 = out[:, :2]
        assert np.abs(x1 - (mu + s * x0)).max() < 10 * tol
        ref = gaussian_logpdf(x1, mu, s)
        assert (np.abs(out[:, 2] - ref) < 10 * tol * (1 + np.abs(ref))).all()


# ---- edges and failures --------------------------------------------------------------

def test_zero_span_and_empty_batch_do_nothing():
    x, st = dopri5(linear_field, (M_SPIRAL,), X0, 0.5, 0.5)
    assert np.array_equal(x, X0) and st == SolveStats(0, 0, 0)
    x, st = dopri5(linear_field, (M_SPIRAL,), np.zeros((0, 2)), 0.0, 1.0)
    assert x.shape == (0, 2) and st.nfe == 0


@njit(cache=True)
def blowup_field(params, x, t, out):
    """dx/dt = x^2: from x(0) = 1 the solution 1 / (1 - t) is infinite at t = 1."""
    B, D = x.shape
    for p in range(B):
        for d in range(D):
            out[p, d] = x[p, d] * x[p, d]


def test_failures_are_user_errors():
    with pytest.raises(FmnumpyError, match="max_steps"):
        dopri5(linear_field, (M_SPIRAL,), X0, 0.0, 2.0, 1e-10, 1e-10, max_steps=5)
    with pytest.raises(FmnumpyError):
        dopri5(blowup_field, (0,), np.ones((2, 1)), 0.0, 2.0, max_steps=20000)
    with pytest.raises(FmnumpyError, match="norm"):
        dopri5(linear_field, (M_SPIRAL,), X0, norm="l1")
    with pytest.raises(FmnumpyError, match="tolerances"):
        dopri5(linear_field, (M_SPIRAL,), X0, rtol=0.0, atol=0.0)
    with pytest.raises(FmnumpyError, match="shape"):
        dopri5(linear_field, (M_SPIRAL,), X0[0])


# ---- the network ---------------------------------------------------------------------

def test_dopri5_mlp_agrees_with_rk4_and_chunks():
    spec = MLPSpec(2, (32, 32), "silu", n_freq=1)
    theta = init_params(spec.sizes, np.random.default_rng(3)).astype(np.float32)
    x0 = np.random.default_rng(4).standard_normal((50, 2)).astype(np.float32)
    x1, st = dopri5_mlp(theta, spec, x0, rtol=1e-7, atol=1e-7)
    ref, _ = sample_with_logprob(theta, spec, x0, "rk4", steps=200)
    assert x1.dtype == np.float64 and st.nfe == 2 + 6 * (st.accepted + st.rejected)
    assert np.abs(x1 - ref).max() < 1e-6
    xc, stc = dopri5_mlp(theta, spec, x0, rtol=1e-7, atol=1e-7, chunk=16)
    assert np.abs(xc - ref).max() < 1e-6 and stc.nfe >= st.nfe
    with pytest.raises(FmnumpyError, match="shape"):
        dopri5_mlp(theta, spec, x0[:, :1])
