"""ODE solvers for dx/dt = v(x, t), t from 0 (noise) to 1 (data).

Dimension letters: B particles, D data dimension, S stages.

An explicit Runge-Kutta method is data: a Butcher tableau (c, A, b) written as
exact fractions, and one stepping loop, :func:`rk_integrate`, serves them all
(``docs/solvers.md``).  With step h and stages

    k_i = v(x + h sum_{j<i} a_ij k_j,  t + c_i h),     x <- x + h sum_i b_i k_i.

The velocity field is passed to the compiled loop as a compiled function
``field(params, x, t, out)`` so that the same loop integrates the network
(:func:`mlp_field`) and the closed-form fields of the tests.  The loop's other
arguments come as tuples:

    grid = (t0, t1, steps)       ``steps`` equal steps from t0 to t1
    tab  = (c, A, b)             the tableau's arrays (S,), (S, S), (S,)
    work = (K, xs, ts)           stage buffers (S, B, D), (B, D), (B,)
    out  = (traj, rec)           recorded states (R + 1, B, D) at step counts rec (R + 1,)
"""
from fractions import Fraction as Fr

import numba
import numpy as np
from numba import njit, prange

from .errors import FmnumpyError
from .mlp import input_features, label_features, label_offset, mlp_forward


class Tableau:
    """Butcher tableau of an explicit RK method with S stages and order p."""

    def __init__(self, name, order, c, A, b):
        S = len(b)
        self.name, self.order, self.stages = name, order, S
        self.c_exact = tuple(Fr(x) for x in c)
        self.b_exact = tuple(Fr(x) for x in b)
        self.A_exact = tuple(tuple(Fr(x) for x in row) for row in A)
        self.c = np.array([float(x) for x in self.c_exact])
        self.b = np.array([float(x) for x in self.b_exact])
        self.A = np.zeros((S, S))
        for i, row in enumerate(self.A_exact):
            self.A[i, :len(row)] = [float(x) for x in row]


TABLEAUS = {
    "euler": Tableau("euler", 1, c=[0], A=[[]], b=[1]),
    "midpoint": Tableau("midpoint", 2, c=[0, Fr(1, 2)], A=[[], [Fr(1, 2)]], b=[0, 1]),
    "heun": Tableau("heun", 2, c=[0, 1], A=[[], [1]], b=[Fr(1, 2), Fr(1, 2)]),
    # the classical Runge-Kutta method (not the 3/8 rule)
    "rk4": Tableau("rk4", 4, c=[0, Fr(1, 2), Fr(1, 2), 1],
                   A=[[], [Fr(1, 2)], [0, Fr(1, 2)], [0, 0, 1]],
                   b=[Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6)]),
}
METHODS = tuple(TABLEAUS)


def tableau(method):
    key = str(method).lower()
    if key not in TABLEAUS:
        raise FmnumpyError(f"unknown method {method!r}; choose one of: " + ", ".join(METHODS))
    return TABLEAUS[key]


@njit(cache=True)
def rk_stage_input(x, K, A, i, h, xs):
    """xs = x + h sum_{j<i} a_ij k_j, the input of stage i.  x, xs (B, D), K (S, B, D)."""
    B, D = x.shape
    for p in range(B):
        for d in range(D):
            acc = x[p, d]
            for j in range(i):
                acc += h * A[i, j] * K[j, p, d]
            xs[p, d] = acc


@njit(cache=True)
def rk_combine(x, K, b, h):
    """x <- x + h sum_i b_i k_i, the step update."""
    B, D = x.shape
    for p in range(B):
        for d in range(D):
            acc = 0.0
            for i in range(b.shape[0]):
                acc += b[i] * K[i, p, d]
            x[p, d] += h * acc


@njit(cache=True)
def rk_record(traj, x, n, rec):
    """After step n (0-based) store x in every row r of traj with rec[r] == n + 1
    (rec (R,) ascending step counts; rec[0] = 0 is the initial state)."""
    for r in range(1, rec.shape[0]):
        if rec[r] == n + 1:
            traj[r] = x


def check_steps(steps):
    """A fixed-step solve's step count as an int (truncated), at least 1, else one
    FmnumpyError line."""
    steps = int(steps)
    if steps < 1:
        raise FmnumpyError(f"steps must be a positive integer, got {steps}")
    return steps


def record_steps(steps, record):
    """Step counts of R + 1 evenly spread trajectory rows: round(r steps / R),
    r = 0..R (R = min(record, steps)), so the last row is the final state."""
    R = min(int(record), int(steps))
    return np.round(np.arange(R + 1) * (steps / R)).astype(np.int64)


@njit(cache=False, nogil=True)   # takes a compiled function argument: Numba cannot cache it
def rk_integrate(field, params, x, grid, tab, work, out):
    """Integrate x (B, D) in place over ``grid`` with the tableau ``tab`` for any
    compiled ``field(params, x, t, out)`` (the tuples: module docstring).

    If traj has rows, traj[0] = x(t0) and traj[r] = x after rec[r] steps.
    """
    t0, t1, steps = grid
    c, A, b = tab
    K, xs, ts = work
    traj, rec = out
    h = (t1 - t0) / steps
    if traj.shape[0] > 0:
        traj[0] = x
    for n in range(steps):
        for i in range(b.shape[0]):
            rk_stage_input(x, K, A, i, h, xs)
            ts[:] = t0 + n * h + c[i] * h
            field(params, xs, ts, K[i])
        rk_combine(x, K, b, h)
        rk_record(traj, x, n, rec)


@njit(cache=True)
def mlp_field(params, x, t, out):
    """The network as a field: out = MLP(concat(x, features(t)[, onehot(y)])).

    params = (theta, sizes, kind, feats, X, A, Z, y, w, V) (feats: ``MLPSpec.feats``).
    y (B,) int64: the
    particles' labels for a conditional network (the null class for none), or (0,)
    for an unconditional one.  With guidance w != 1 the field is classifier-free
    guidance (Ho & Salimans 2022; docs/guidance.md),
    v = v(x, t, null) + w (v(x, t, y) - v(x, t, null)), V (B, D) scratch."""
    theta, sizes, kind, feats, X, A, Z, y, w, V = params
    input_features(x, t, feats, X)
    if y.shape[0] == 0:
        out[:] = mlp_forward(theta, sizes, kind, X, A, Z)
        return
    off = label_offset(x.shape[1], feats)             # the label's one-hot block
    label_features(y, off, X)
    out[:] = mlp_forward(theta, sizes, kind, X, A, Z)   # v(x, t, y)
    if w != 1.0:
        null = sizes[0] - 1                            # the null class's column
        for i in range(y.shape[0]):
            X[i, off + y[i]] = 0.0
            X[i, null] = 1.0
        V[:] = mlp_forward(theta, sizes, kind, X, A, Z)  # v(x, t, null)
        for i in range(out.shape[0]):
            for d in range(out.shape[1]):
                out[i, d] = V[i, d] + w * (out[i, d] - V[i, d])


@njit(cache=True)
def rk_integrate_mlp(params, x, grid, tab, work, out):
    """:func:`rk_integrate` with the network as the field, line for line the same
    loop; a separate function only because Numba cannot cache code that takes a
    compiled function as an argument (the tests check the two agree)."""
    t0, t1, steps = grid
    c, A, b = tab
    K, xs, ts = work
    traj, rec = out
    h = (t1 - t0) / steps
    if traj.shape[0] > 0:
        traj[0] = x
    for n in range(steps):
        for i in range(b.shape[0]):
            rk_stage_input(x, K, A, i, h, xs)
            ts[:] = t0 + n * h + c[i] * h
            mlp_field(params, xs, ts, K[i])
        rk_combine(x, K, b, h)
        rk_record(traj, x, n, rec)


@njit(cache=True, parallel=True)
def _integrate_chunks(theta, net, x, grid, tab, out, chunk, cond):
    """Split the particles into chunks of ``chunk`` and integrate them in parallel;
    each chunk owns its own buffers (no sharing between threads).  net = (sizes,
    kind, feats) of the network; cond = (y (N,) labels or (0,), guidance w)."""
    sizes, kind, feats = net
    y, w = cond
    c, A, b = tab
    traj, rec = out
    N, D = x.shape
    S = b.shape[0]
    n_chunks = (N + chunk - 1) // chunk
    hsum = 0
    for l in range(1, sizes.shape[0]):
        hsum += sizes[l]
    for ci in prange(n_chunks):
        lo = ci * chunk
        hi = min(N, lo + chunk)
        B = hi - lo
        X = np.empty((B, sizes[0]), dtype=x.dtype)
        Abuf = np.empty(B * hsum, dtype=x.dtype)
        Zbuf = np.empty(0, dtype=x.dtype)          # inference: no sigma' cache
        K = np.empty((S, B, D), dtype=x.dtype)
        xs = np.empty((B, D), dtype=x.dtype)
        ts = np.empty(B, dtype=x.dtype)
        xc = x[lo:hi].copy()
        tr = np.empty((traj.shape[0], B, D), dtype=x.dtype)
        yc = y[lo:hi] if y.shape[0] > 0 else y
        V = np.empty((B if w != 1.0 and y.shape[0] > 0 else 0, D), dtype=x.dtype)
        rk_integrate_mlp((theta, sizes, kind, feats, X, Abuf, Zbuf, yc, w, V), xc, grid,
                         tab, (K, xs, ts), (tr, rec))
        x[lo:hi] = xc
        for r in range(traj.shape[0]):
            traj[r, lo:hi] = tr[r]


def balanced_chunk(N, chunk, threads):
    """Particles per chunk, at most ``chunk``, such that the chunks come in a whole
    number of rounds of ``threads`` (prange gives each thread an equal share of the
    chunks): 10,000 particles at most 2,048 a chunk on 2 threads make 6 chunks of
    1,667, not 5 of 2,048 (3 on one thread, 2 on the other)."""
    threads = max(1, int(threads))
    rounds = max(1, -(-N // (threads * max(1, chunk))))
    return max(1, -(-N // (rounds * threads)))


def limit_blas(threads):
    """Limit every BLAS to ``threads`` threads until ``.restore_original_limits()``.

    Compiled ``np.dot`` calls SciPy's BLAS (``scipy.linalg.cython_blas``), a second
    OpenBLAS beside NumPy's that is loaded on first use; it is loaded here first,
    else threadpoolctl would not see it: the first parallel training run then
    nested two BLAS threads in each of Numba's (20x slower steps on 2 cores)."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's OpenBLAS)
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=int(threads), user_api="blas")


def single_threaded_blas():
    """Limit BLAS to one thread until ``.restore_original_limits()``: the sampler's
    particle chunks run on Numba's threads (see DEVELOPERS.md, Threads)."""
    return limit_blas(1)


def conditioning(spec, n, labels=None, guidance=1.0):
    """(y (n,) int64, w) for :func:`mlp_field`: an unconditional network takes
    (0,) labels; a conditional one the given labels, or the null class for all."""
    if not spec.n_classes:
        return NO_LABELS, 1.0
    if labels is None:
        return np.full(n, spec.null_class, dtype=np.int64), 1.0
    return np.ascontiguousarray(labels, dtype=np.int64), float(guidance)


NO_LABELS = np.zeros(0, dtype=np.int64)


def integrate_mlp(theta, spec, x0, method="rk4", steps=100, t0=0.0, t1=1.0, record=0,
                  chunk=2048, labels=None, guidance=1.0):
    """Solve dx/dt = v_theta(x, t) from x(t0) = x0 (N, D) to t1.

    Returns x(t1) (N, D) and, if ``record`` = R > 0, the trajectory (R + 1, N, D)
    at the step counts :func:`record_steps` (R is capped at ``steps``); its first
    row is x0 and its last the final state.  A conditional network takes the
    particles' ``labels`` (N,) (None: the null class, the whole distribution) and
    the ``guidance`` weight w (:func:`mlp_field`).
    """
    tab = tableau(method)
    steps = check_steps(steps)
    x = np.ascontiguousarray(x0, dtype=theta.dtype).copy()
    if x.ndim != 2 or x.shape[1] != spec.dim:
        raise FmnumpyError(f"x0 must have shape (N, {spec.dim}), got {x.shape}")
    if record:
        rec = record_steps(steps, record)
    else:
        rec = np.zeros(0, dtype=np.int64)
    traj = np.empty((rec.shape[0], x.shape[0], x.shape[1]), dtype=x.dtype)
    chunk = balanced_chunk(x.shape[0], int(chunk), numba.get_num_threads())
    blas = single_threaded_blas()
    try:
        _integrate_chunks(theta, (spec.sizes, spec.kind, spec.feats), x,
                          (float(t0), float(t1), steps), (tab.c, tab.A, tab.b), (traj, rec),
                          chunk, conditioning(spec, x.shape[0], labels, guidance))
    finally:
        blas.restore_original_limits()
    return (x, traj) if record else x
