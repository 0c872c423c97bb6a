"""Sampling and exact likelihood on a manifold (``docs/manifolds.md``).

Dimension letters: B particles, D coordinates, E embedding width, M = D tangent
directions.

**Sampler.**  The same Butcher tableaus as ``solvers.py`` and the same stage and
update formulas (``solvers.rk_stage_input``, ``solvers.rk_combine``), with the
manifold's ``projx`` after each stage input and after each step:

    y_i = projx(x + h sum_{j<i} a_ij k_j),   k_i = v(y_i, t + c_i h),
    x  <- projx(x + h sum_i b_i k_i).

On the torus projx is wrap, exact for the periodic field.  On the sphere the
network's field is constant along rays (it sees x / |x|), so the stages are
those of the ordinary method applied in R^D to that extension, whose flow keeps
|x|; the final projection moves x by O(h^(p+1)) only, and the method keeps its
order p (Hairer, Lubich & Wanner, Geometric Numerical Integration, IV.4).

**Likelihood.**  Along the flow d/dt log p_t(x_t) = -div_M v(x_t, t) with the
Riemannian divergence; for v = P(x) m(x) on the sphere

    div_M v = tr(P J_m) - (D - 1) (x . m),        J_m = dm/dx,

and on the flat torus div v = sum_d dv_d / dx_d.  The JVPs of the D unit
directions give J_m exactly (``likelihood.mlp_forward_jvp``), the tangents
entering through the point's embedding (:func:`embedding_tangents`).  The
density is with respect to the manifold's volume (area on S^2), the prior
p0 = 1 / volume.  The sampler runs in the weights' float32; ``log_prob`` keeps its
state [x, l] in float64 and runs the network's passes in float32 (the default of
the estimator) or float64 (the tests' oracle).  Both solve their chunks of
particles on Numba's threads.
"""
import numpy as np
from numba import njit

from fmnumpy.errors import positive_int
from fmnumpy.nn.tangents import mlp_forward_jvp
from fmnumpy.manifold.manifolds import SPHERE, TORUS, prior_log_density, projx, row_dot
from fmnumpy.nn.mlp import input_tangents
from fmnumpy.manifold.riemannian import manifold_features, manifold_velocity
from fmnumpy.ode.solvers import (record_steps, rk_combine, rk_record, rk_stage_input,
                                  solve_in_chunks, tableau)

CHUNK = 4096          # particles per solve


@njit(cache=True)
def embedding_tangents(code, X, feats, U):
    """U[d, i] = d embed(x_i) / dx_d (M = D, B, E) of ``riemannian.manifold_features``,
    read off the features X: on the torus d cos(h x_d) = -h sin(h x_d) and
    d sin(h x_d) = h cos(h x_d); on the sphere and in R^D e_d for y (div_M uses
    J_m of the point as it enters, see the module docstring) and, with p = b . y,
    d sin(w p) = w b_d cos(w p), d cos(w p) = -w b_d sin(w p)."""
    if code != TORUS:
        input_tangents(X, feats, U)                       # e_d and the plane waves
        return
    K = feats[1]
    M, B, E = U.shape
    for d in range(M):
        for i in range(B):
            for e in range(E):
                U[d, i, e] = 0.0
            for k in range(K + 1):
                c, s = 2 * M * k + d, 2 * M * k + M + d      # cos and sin columns
                U[d, i, c] = -(k + 1) * X[i, s]
                U[d, i, s] = (k + 1) * X[i, c]


@njit(cache=True)
def net_div_field(params, x, t, out_v, out_div):
    """out_v = v(x, t) = P(x) m (B, D) and out_div = div_M v (B,) (module docstring).
    params = (theta, net, X, A, U, T1, T2) with U (D, B, E), T1, T2 flat scratch."""
    theta, net, X, A, U, T1, T2 = params
    code, sizes, kind, feats = net
    B, D = x.shape
    manifold_features(code, x, t, feats, X)
    embedding_tangents(code, X, feats, U)
    m, JU = mlp_forward_jvp(theta, sizes, kind, X, A, U, T1, T2)   # (B, D), (D, B, D)
    for i in range(B):
        tr = 0.0
        for d in range(D):
            tr += JU[d, i, d]                                       # tr J_m
        if code == SPHERE:
            xm = row_dot(X[:, :D], i, m, i)                         # x . m, |x| = 1
            for d in range(D):
                xJe = 0.0
                for k in range(D):
                    xJe += X[i, k] * JU[d, i, k]                    # x . (J_m e_d)
                tr -= X[i, d] * xJe                                 # - x^T J_m x
            tr -= (D - 1) * xm
            for d in range(D):
                out_v[i, d] = m[i, d] - xm * X[i, d]
        else:
            for d in range(D):
                out_v[i, d] = m[i, d]
        out_div[i] = tr


@njit(cache=True)
def flow_field(params, s, t, out):
    """The field the sampler integrates: with s (B, D), ds/dt = v(s, t); with the
    log-density column, s = [x, l] (B, D + 1), ds/dt = [v, -div_M v].
    params = (theta, net, X, A, U, T1, T2, v, div) (:func:`solver_params`)."""
    theta, net, X, A, U, T1, T2, v, div = params
    D = v.shape[1]
    if s.shape[1] == D:
        manifold_velocity(theta, net, s, t, X, A, A[:0], out)
        return
    x = s[:, :D]
    net_div_field((theta, net, X, A, U, T1, T2), x, t, v, div)
    for i in range(s.shape[0]):
        for d in range(D):
            out[i, d] = v[i, d]
        out[i, D] = -div[i]                      # d/dt log p_t(x_t) = -div_M v


@njit(cache=True, nogil=True)
def manifold_rk(params, code, s, grid, tab, work, out):
    """Integrate s (B, D) or (B, D + 1) in place over grid = (t0, t1, steps) with
    tab = (c, A, b) and :func:`flow_field`, projecting the point (the first D
    columns; the log-density is left alone) onto the manifold after every stage
    input and step.  work = (K (S, B, C), xs (B, C), ts (B,)); out = (traj, rec)
    as ``solvers.rk_integrate``."""
    t0, t1, steps = grid
    c, A, b = tab
    K, xs, ts = work
    traj, rec = out
    D = params[7].shape[1]
    h = (t1 - t0) / steps
    if traj.shape[0] > 0:
        traj[0] = s
    for n in range(steps):
        for i in range(b.shape[0]):
            rk_stage_input(s, K, A, i, h, xs)
            projx(code, xs[:, :D], xs[:, :D])
            ts[:] = t0 + n * h + c[i] * h
            flow_field(params, xs, ts, K[i])
        rk_combine(s, K, b, h)
        projx(code, s[:, :D], s[:, :D])
        rk_record(traj, s, n, rec)


def solver_params(theta, net, batch, with_div, dtype=np.float64):
    """The params tuple of :func:`flow_field` for ``batch`` particles in ``dtype``;
    the tangent buffers are empty unless ``with_div``."""
    _, sizes, _, (n_freq, _, _) = net
    B, D = int(batch), int(sizes[-1])
    M = B if with_div else 0
    width = int(sizes[1:].max())
    E = int(sizes[0]) - 1 - 2 * int(n_freq)
    z = lambda *shape: np.zeros(shape, dtype=dtype)      # noqa: E731
    return (np.ascontiguousarray(theta, dtype=dtype), net, z(B, int(sizes[0])),
            z(B * int(sizes[1:].sum())), z(D, M, E), z(D * M * width), z(D * M * width),
            z(B, D), z(B))


def _solve(theta, net, s, t0, t1, method, steps, record=0):
    """manifold_rk on s (B, D) or (B, D + 1) from t0 to t1: s(t1) and the
    trajectory (R + 1, B, C) (empty without ``record``).  The network runs in
    theta's dtype, the state s and the stages in s's own (the likelihood: float32
    passes, a float64 state)."""
    tab = tableau(method)
    steps = positive_int("steps", steps)
    B, C = s.shape
    rec = record_steps(steps, record) if record else np.zeros(0, dtype=np.int64)
    traj = np.empty((rec.shape[0], B, C), dtype=s.dtype)
    params = solver_params(theta, net, B, C > int(net[1][-1]), theta.dtype)
    work = (np.zeros((tab.stages, B, C), dtype=s.dtype), np.zeros((B, C), dtype=s.dtype),
            np.zeros(B, dtype=s.dtype))
    manifold_rk(params, net[0], s, (float(t0), float(t1), steps), (tab.c, tab.A, tab.b),
                work, (traj, rec))
    return s, traj


def integrate(theta, net, x0, method="rk4", steps=100, record=0, chunk=CHUNK):
    """Push x0 (N, D) on the manifold from t = 0 to 1: x1 (N, D) and, with
    ``record`` = R > 0, the trajectory (R + 1, N, D) (``solvers.record_steps``).
    The solve runs in theta's dtype (float32 weights: float32, as the Euclidean
    sampler; the sphere's points are renormalised after every step), the chunks
    on Numba's threads."""
    x = np.array(x0, dtype=theta.dtype)
    N, D = x.shape
    traj = (np.empty((record_steps(int(steps), record).shape[0], N, D), dtype=x.dtype)
            if record else None)

    def solve(lo, hi):
        x[lo:hi], tr = _solve(theta, net, x[lo:hi].copy(), 0.0, 1.0, method, steps, record)
        if record:
            traj[:, lo:hi] = tr

    solve_in_chunks(N, chunk, solve)
    return (x, traj) if record else x


def log_prob(theta, net, x, method="rk4", steps=100, chunk=CHUNK, dtype=np.float64):
    """log p_1(x) (N,) w.r.t. the manifold's volume for points x (N, D) on it:
    solve [x, l] backwards from t = 1 (l = 0) to 0 with dl/dt = -div_M v, then
    log p_1(x) = log p0(x(0)) - l(0).  The network's passes run in ``dtype``
    (float32 is faster: its tanh and exp vectorise), the state [x, l] and its
    sums in float64 always; the chunks on Numba's threads."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    N, D = x.shape
    theta = np.ascontiguousarray(theta, dtype=dtype)
    out = np.empty(N)

    def solve(lo, hi):
        s = np.zeros((hi - lo, D + 1))
        s[:, :D] = x[lo:hi]
        s, _ = _solve(theta, net, s, 1.0, 0.0, method, steps)
        out[lo:hi] = prior_log_density(net[0], s[:, :D]) - s[:, D]

    solve_in_chunks(N, chunk, solve)
    return out
