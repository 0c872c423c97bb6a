"""The network as a field dx/dt = v_theta(x, t) for the shared solvers
(``ode.solvers.rk_integrate``, ``ode.adaptive.dopri5``): fixed-step solves of
particle chunks on Numba's threads, and DOPRI5; labels and classifier-free guidance.

Dimension letters: B particles, D data dimension.
"""
import numba
import numpy as np
from numba import njit, prange

from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError
from fmnumpy.nn.mlp import (condition_features, input_features, label_offset, mlp_forward,
                            null_condition)
from fmnumpy.ode.adaptive import MAX_STEPS, SolveStats, dopri5
from fmnumpy.ode.solvers import (balanced_chunk, check_steps, record_steps, rk_combine,
                                 rk_record, rk_stage_input, tableau)
from fmnumpy.threads import single_threaded_blas


@njit(cache=True)
def mlp_field(params, x, t, out):
    """The network as a field: out = MLP(concat(x, features(t)[, onehot(y)])).

    params = (theta, sizes, kind, feats, X, A, Z, y, w, V) (feats: ``MLPSpec.feats``).
    y: the particles' labels (B,) int64 for a labelled network (the null class for
    none), their condition block (B, K + 1) for one with a continuous condition
    (``mlp.condition_features``; zero rows for none), or (0,) for an unconditional
    one.  With guidance w != 1 the field is classifier-free guidance (Ho & Salimans
    2022; docs/guidance.md), v = v(x, t, null) + w (v(x, t, y) - v(x, t, null)),
    V (B, D) scratch."""
    theta, sizes, kind, feats, X, A, Z, y, w, V = params
    input_features(x, t, feats, X)
    if y.shape[0] == 0:
        out[:] = mlp_forward(theta, sizes, kind, X, A, Z)
        return
    off = label_offset(x.shape[1], feats)             # the condition's block
    condition_features(y, off, X)
    out[:] = mlp_forward(theta, sizes, kind, X, A, Z)   # v(x, t, y)
    if w != 1.0:
        null_condition(y, off, X)
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
        X = np.zeros((B, sizes[0]), dtype=x.dtype)   # zero: a flow map's gap block (h = 0)
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


def conditioning(spec, n, labels=None, guidance=1.0):
    """(y, w) for :func:`mlp_field`: an unconditional network takes (0,) labels; a
    labelled one the given labels (n,), or the null class for all; one of continuous
    conditions the given blocks (n, K + 1) (``conditions.Standardizer``; (n, E + 1) through
    a condition embedding), or zeros."""
    if spec.n_cond:
        if labels is None:
            return np.zeros((n, spec.cond_width + 1), dtype=DTYPE), 1.0
        return np.ascontiguousarray(labels, dtype=DTYPE), float(guidance)
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


def dopri5_mlp(theta, spec, x0, rtol=1e-5, atol=1e-5, t0=0.0, t1=1.0, norm="rms",
               dtype=np.float64, chunk=None, max_steps=MAX_STEPS, labels=None, guidance=1.0):
    """Solve dx/dt = v_theta(x, t) from x(t0) = x0 (N, D) to t1 with DOPRI5.

    The network and the state are cast to ``dtype`` (float64 by default, so
    rtol down to ~1e-12 is meaningful; float32 limits it to ~1e-6).  With
    ``chunk``, particles are solved in groups of that size, each with its own
    step sizes, and the stats are summed over groups.  ``labels``, ``guidance``:
    the conditioning of a conditional network (``solvers.conditioning``).
    Returns (x(t1) (N, D) in ``dtype``, SolveStats).
    """
    x0 = np.asarray(x0)
    if x0.ndim != 2 or x0.shape[1] != spec.dim:
        raise FmnumpyError(f"x0 must have shape (N, {spec.dim}), got {x0.shape}")
    theta = np.ascontiguousarray(theta, dtype=dtype)
    N = x0.shape[0]
    chunk = N if not chunk else int(chunk)
    out = np.empty((N, spec.dim), dtype=dtype)
    nfe = acc = rej = 0
    sizes = spec.sizes
    y, w = conditioning(spec, N, labels, guidance)
    for lo in range(0, N, max(chunk, 1)):
        xc = np.ascontiguousarray(x0[lo:lo + chunk], dtype=dtype)
        B = xc.shape[0]
        params = (theta, sizes, spec.kind, spec.feats,
                  np.zeros((B, int(sizes[0])), dtype=dtype),
                  np.zeros(B * int(sizes[1:].sum()), dtype=dtype),
                  np.zeros(0, dtype=dtype),            # inference: no sigma' cache
                  y[lo:lo + B] if y.shape[0] else y, w,
                  np.zeros((B if w != 1.0 and y.shape[0] else 0, spec.dim), dtype=dtype))
        xc, st = dopri5(mlp_field, params, xc, t0, t1, rtol, atol, norm=norm,
                        max_steps=max_steps)
        out[lo:lo + B] = xc
        nfe, acc, rej = nfe + st.nfe, acc + st.accepted, rej + st.rejected
    return out, SolveStats(nfe, acc, rej)
