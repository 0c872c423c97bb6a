"""Runge-Kutta solvers: Butcher tableaus checked with exact fractions, the shared
stepping loop on fields with closed-form solutions (exactness and measured order),
trajectory recording and the network integrator.

Dimension letters: B (or N) particles, D data dimension, S stages.
"""
import math
from fractions import Fraction as Fr

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import njit

from fmnumpy.ode import solvers
from fmnumpy.euclidean.integrate import integrate_mlp
from fmnumpy.errors import FmnumpyError
from fmnumpy.nn.mlp import MLPSpec, init_params, views
from reference import REPO  # noqa: E402

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)
METHODS = ("euler", "midpoint", "heun", "rk4")
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


# ---- compiled test fields: field(params, x, t, out) ------------------------------------

@njit
def constant_field(params, x, t, out):
    """dx/dt = c."""
    c = params[0]
    for p in range(x.shape[0]):
        for d in range(x.shape[1]):
            out[p, d] = c[d]


@njit
def linear_field(params, x, t, out):
    """dx/dt = A x (autonomous)."""
    A = params[0]
    for p in range(x.shape[0]):
        for i in range(x.shape[1]):
            acc = 0.0
            for j in range(x.shape[1]):
                acc += A[i, j] * x[p, j]
            out[p, i] = acc


@njit
def time_linear_field(params, x, t, out):
    """dx/dt = -2 t x (non-autonomous): x(t) = x(t0) exp(t0^2 - t^2)."""
    for p in range(x.shape[0]):
        for d in range(x.shape[1]):
            out[p, d] = -2.0 * t[p] * x[p, d]


@njit
def time_poly_field(params, x, t, out):
    """dx/dt = sum_j a_j t^j, the same in every dimension (pure quadrature)."""
    a = params[0]
    for p in range(x.shape[0]):
        acc = 0.0
        for j in range(a.shape[0]):
            acc += a[j] * t[p] ** j
        for d in range(x.shape[1]):
            out[p, d] = acc


def integrate(field, params, x0, method, steps, t0=0.0, t1=1.0, n_rec=0, every=1):
    """x(t1) via solvers.rk_integrate (and the trajectory buffer)."""
    tab = solvers.TABLEAUS[method]
    x = np.array(x0, dtype=np.float64)
    B, D = x.shape
    K = np.zeros((tab.stages, B, D))
    xs, ts = np.zeros((B, D)), np.zeros(B)
    traj = np.zeros((n_rec, B, D))
    solvers.rk_integrate(field, params, x, (float(t0), float(t1), int(steps)),
                         (tab.c, tab.A, tab.b), (K, xs, ts),
                         (traj, np.arange(0, steps + 1, every, dtype=np.int64)[:n_rec]))
    return x, traj


X0 = np.array([[1.0, 0.0], [0.3, -2.0], [-1.5, 0.7]])        # (B, D) = (3, 2)
DECAY, OMEGA = 0.5, 2.0
A_ROT = np.array([[-DECAY, -OMEGA], [OMEGA, -DECAY]])        # rotation + decay


def exact_linear(x0, t):
    """exp(A t) x0 for A = -DECAY I + OMEGA J: e^{-DECAY t} R(OMEGA t) x0."""
    c, s = math.cos(OMEGA * t), math.sin(OMEGA * t)
    R = np.array([[c, -s], [s, c]]) * math.exp(-DECAY * t)
    return x0 @ R.T


# ---- Butcher tableaus ------------------------------------------------------------------

def order_conditions(tab):
    """{order: [(lhs, rhs), ...]} for the rooted trees up to order 5 (first one only)."""
    S, b, c = tab.stages, tab.b_exact, tab.c_exact
    A = [[tab.A_exact[i][j] if j < len(tab.A_exact[i]) else Fr(0) for j in range(S)]
         for i in range(S)]
    r = range(S)
    return {
        1: [(sum(b), Fr(1))],
        2: [(sum(b[i] * c[i] for i in r), Fr(1, 2))],
        3: [(sum(b[i] * c[i] ** 2 for i in r), Fr(1, 3)),
            (sum(b[i] * A[i][j] * c[j] for i in r for j in r), Fr(1, 6))],
        4: [(sum(b[i] * c[i] ** 3 for i in r), Fr(1, 4)),
            (sum(b[i] * c[i] * A[i][j] * c[j] for i in r for j in r), Fr(1, 8)),
            (sum(b[i] * A[i][j] * c[j] ** 2 for i in r for j in r), Fr(1, 12)),
            (sum(b[i] * A[i][j] * A[j][k] * c[k] for i in r for j in r for k in r),
             Fr(1, 24))],
        5: [(sum(b[i] * c[i] ** 4 for i in r), Fr(1, 5))],
    }


@pytest.mark.parametrize("method", METHODS)
def test_tableau_is_consistent_explicit_and_has_its_order(method):
    tab = solvers.TABLEAUS[method]
    assert tab.order == ORDER[method]
    assert tab.stages == len(tab.b_exact) == len(tab.c_exact) == len(tab.A_exact)
    for i, row in enumerate(tab.A_exact):
        assert len(row) <= i, "explicit: a_ij = 0 for j >= i"
        assert sum(row, Fr(0)) == tab.c_exact[i], f"row {i} of A must sum to c_{i}"
        for x in row:
            assert isinstance(x, Fr)
    conds = order_conditions(tab)
    for p in range(1, tab.order + 1):
        for lhs, rhs in conds[p]:
            assert lhs == rhs, f"{method}: order-{p} condition {lhs} != {rhs}"
    assert any(lhs != rhs for lhs, rhs in conds[tab.order + 1]), "order is not higher"
    # the float arrays the compiled loop uses are the fractions
    np.testing.assert_array_equal(tab.b, [float(x) for x in tab.b_exact])
    np.testing.assert_array_equal(tab.c, [float(x) for x in tab.c_exact])
    assert np.all(np.triu(tab.A) == 0)
    for i, row in enumerate(tab.A_exact):
        np.testing.assert_array_equal(tab.A[i, :len(row)], [float(x) for x in row])


def test_rk4_is_the_classical_method_not_the_three_eighths_rule():
    tab = solvers.TABLEAUS["rk4"]
    assert tab.b_exact == (Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6))
    assert tab.c_exact == (0, Fr(1, 2), Fr(1, 2), 1)


def test_unknown_method_lists_the_names():
    with pytest.raises(FmnumpyError) as e:
        solvers.tableau("rk45")
    for name in METHODS:
        assert name in str(e.value)
    assert solvers.tableau("RK4") is solvers.TABLEAUS["rk4"]
    assert set(solvers.METHODS) == set(METHODS)


# ---- the stepping loop on closed-form fields -----------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps,t0,t1", [(1, 0.0, 1.0), (7, 0.0, 1.0), (10, 0.25, -0.5)])
def test_constant_field_is_integrated_exactly(method, steps, t0, t1):
    c = np.array([0.75, -2.5])
    x, _ = integrate(constant_field, (c,), X0, method, steps, t0, t1)
    np.testing.assert_allclose(x, X0 + c * (t1 - t0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_polynomial_in_t_is_exact_up_to_the_quadrature_degree(method):
    """dx/dt = p(t): euler integrates constants exactly, midpoint and heun lines,
    rk4 (Simpson's rule) cubics; one degree more leaves an error.  Checks c."""
    degree = {"euler": 0, "midpoint": 1, "heun": 1, "rk4": 3}[method]
    rng = np.random.default_rng(3)
    for deg, exact in ((degree, True), (degree + 1, False)):
        a = rng.uniform(0.5, 2.0, size=deg + 1)
        t0, t1 = 0.2, 1.3
        x, _ = integrate(time_poly_field, (a,), X0, method, 3, t0, t1)
        integral = sum(a[j] * (t1 ** (j + 1) - t0 ** (j + 1)) / (j + 1) for j in range(deg + 1))
        err = np.abs(x - (X0 + integral)).max()
        if exact:
            assert err < 1e-12, f"{method} should integrate degree {deg} exactly: {err:.2e}"
        else:
            assert err > 1e-6, f"{method} should not be exact for degree {deg}: {err:.2e}"


def measured_orders(field, exact, method, ns=(16, 32, 64, 128)):
    errs = []
    for n in ns:
        x, _ = integrate(field, (A_ROT,), X0, method, n)
        errs.append(np.abs(x - exact).max())
    orders = [math.log2(e1 / e2) for e1, e2 in zip(errs, errs[1:])]
    print(f"{method}: errors {['%.2e' % e for e in errs]} orders {['%.3f' % p for p in orders]}")
    return orders


@pytest.mark.parametrize("method", METHODS)
def test_order_of_convergence_on_linear_system(method):
    """dx/dt = A x, A = rotation + decay, exact exp(A t): log2(err(h) / err(h/2)) ~ p."""
    for p in measured_orders(linear_field, exact_linear(X0, 1.0), method):
        assert abs(p - ORDER[method]) < 0.15


@pytest.mark.parametrize("method", METHODS)
def test_order_of_convergence_on_time_dependent_field(method):
    """dx/dt = -2 t x from 0 to 1: x(1) = x0 / e.  Needs the stage times c."""
    for p in measured_orders(time_linear_field, X0 * math.exp(-1.0), method):
        assert abs(p - ORDER[method]) < 0.15


def test_rk_integrate_records_the_trajectory():
    steps, every = 12, 3
    x, traj = integrate(linear_field, (A_ROT,), X0, "rk4", steps, n_rec=steps // every + 1,
                        every=every)
    np.testing.assert_array_equal(traj[0], X0)
    np.testing.assert_array_equal(traj[-1], x)
    for r in range(1, traj.shape[0]):
        xr, _ = integrate(linear_field, (A_ROT,), X0, "rk4", r * every, t1=r * every / steps)
        np.testing.assert_allclose(traj[r], xr, rtol=1e-13, atol=1e-14)


# ---- the network integrator ------------------------------------------------------------------

SPEC = MLPSpec(2, hidden=(8, 8), activation="tanh", n_freq=1)
THETA = init_params(SPEC.sizes, np.random.default_rng(0), np.float32) * 2


def net_ref(theta, x, t):
    """NumPy float64 reference of the network field."""
    w = math.pi
    h = np.concatenate([x, t[:, None], np.sin(w * t)[:, None], np.cos(w * t)[:, None]], 1)
    layers = views(theta.astype(np.float64), SPEC.sizes)
    for l, (W, b) in enumerate(layers):
        h = h @ W + b
        if l < len(layers) - 1:
            h = np.tanh(h)
    return h


def rk_ref(x, method, steps):
    tab = solvers.TABLEAUS[method]
    x = x.astype(np.float64)
    h = 1.0 / steps
    for n in range(steps):
        K = []
        for i in range(tab.stages):
            xs = x + h * sum(tab.A[i, j] * K[j] for j in range(i))
            K.append(net_ref(THETA, xs, np.full(len(x), n * h + tab.c[i] * h)))
        x = x + h * sum(tab.b[i] * K[i] for i in range(tab.stages))
    return x


@pytest.mark.parametrize("method", METHODS)
def test_integrate_mlp_matches_numpy_reference_and_chunking_is_invisible(method):
    x0 = np.random.default_rng(1).standard_normal((11, 2)).astype(np.float32)
    x = integrate_mlp(THETA, SPEC, x0, method, steps=8)
    assert x.shape == (11, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x, rk_ref(x0, method, 8), rtol=1e-4, atol=1e-5)
    # chunks change the BLAS shapes, so only float32 rounding may differ
    x_small_chunks = integrate_mlp(THETA, SPEC, x0, method, steps=8, chunk=3)
    np.testing.assert_allclose(x_small_chunks, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x0, np.random.default_rng(1).standard_normal((11, 2))
                                  .astype(np.float32))                 # input untouched


@pytest.mark.parametrize("steps,record", [(10, 5), (12, 12), (6, 1), (4, 9)])
def test_integrate_mlp_trajectory_when_record_divides_steps(steps, record):
    x0 = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    x, traj = integrate_mlp(THETA, SPEC, x0, "rk4", steps=steps, record=record)
    R = min(record, steps)
    assert traj.shape == (R + 1, 3, 2)
    np.testing.assert_array_equal(traj[0], x0)
    np.testing.assert_array_equal(traj[-1], x)
    every = steps // R
    for r in range(1, R + 1):        # frame r is the state at t = r every / steps
        xr = integrate_mlp(THETA, SPEC, x0, "rk4", steps=r * every,
                                   t1=r * every / steps)
        np.testing.assert_allclose(traj[r], xr, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(steps=st.integers(1, 12), record=st.integers(1, 12), n=st.integers(1, 5))
def test_integrate_mlp_trajectory_has_record_plus_one_frames(steps, record, n):
    """record = R -> traj (R + 1, N, D), traj[0] = x0 and traj[-1] = the final state
    (R is capped at steps)."""
    x0 = np.random.default_rng(n).standard_normal((n, 2)).astype(np.float32)
    x, traj = integrate_mlp(THETA, SPEC, x0, "heun", steps=steps, record=record)
    R = min(record, steps)
    assert traj.shape == (R + 1, n, 2), f"steps={steps} record={record}"
    np.testing.assert_array_equal(traj[0], x0)
    np.testing.assert_array_equal(traj[-1], x)


def test_integrate_mlp_without_record_returns_only_x():
    x0 = np.zeros((4, 2), np.float32)
    out = integrate_mlp(THETA, SPEC, x0, "euler", steps=5)
    assert isinstance(out, np.ndarray) and out.shape == (4, 2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="dopri5"), "euler, midpoint, heun, rk4"),
    (dict(steps=0), "steps"),
    (dict(x0=np.zeros((4, 3), np.float32)), r"\(N, 2\)"),
    (dict(x0=np.zeros(4, np.float32)), r"\(N, 2\)"),
])
def test_integrate_mlp_bad_arguments(kwargs, match):
    args = dict(x0=np.zeros((4, 2), np.float32), method="rk4", steps=5)
    args.update(kwargs)
    with pytest.raises(FmnumpyError, match=match):
        integrate_mlp(THETA, SPEC, **args)


def test_balanced_chunks_come_in_whole_rounds_of_threads():
    from fmnumpy.ode.solvers import balanced_chunk
    assert balanced_chunk(10_000, 2048, 2) == 1667           # 6 chunks, 3 per thread
    for N in (1, 7, 999, 10_000, 123_457):
        for chunk in (1, 64, 2048):
            for threads in (1, 2, 3, 8):
                c = balanced_chunk(N, chunk, threads)
                assert 1 <= c <= chunk
                rounds = -(-N // (threads * chunk))           # as few rounds as the cap allows
                n_chunks = -(-N // c)
                assert n_chunks <= rounds * threads
                # prange hands each thread an equal share of the chunks: the busiest
                # thread carries at most its fair share plus one particle per round
                busiest = min(-(-n_chunks // threads) * c, N)
                assert busiest <= -(-N // threads) + rounds


def test_single_threaded_blas_reaches_the_blas_that_compiled_code_calls():
    """Compiled np.dot calls SciPy's BLAS, loaded on first use: the limit must reach
    it in a fresh process too (it did not, and the first data-parallel training run
    nested BLAS threads in Numba's)."""
    import subprocess
    import sys
    code = ("from fmnumpy.threads import single_threaded_blas\n"
            "from threadpoolctl import threadpool_info\n"
            "lim = single_threaded_blas()\n"
            "import scipy.linalg.cython_blas\n"          # what a compiled np.dot loads
            "print([(i['filepath'], i['num_threads']) for i in threadpool_info()"
            " if i['user_api'] == 'blas'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    libs = eval(out)
    assert libs and all(n == 1 for _, n in libs), libs
