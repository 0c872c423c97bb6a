"""Flow maps: the average velocity u(x, s, t) over [s, t], trained by MeanFlow or by
shortcut self-consistency, and the sampler that jumps along it (docs/flow_maps.md).

Dimension letters: B batch, D data dimension, F input features, P parameters.

The network is the velocity's MLP (``mlp.py``) with a second time input: the gap
h = t - s enters as the block [h, sin(pi 2^k h), 1 - cos(pi 2^k h)] (k < n_freq),
after every other input (``MLPSpec(flow_map=True)``).  The block vanishes at h = 0,
so with it left zero the network is the diagonal u(x, t, t) = v(x, t), and the ODE
solvers, the likelihood and the SDE run on that unchanged.

    map          X_{s,t}(x) = x + (t - s) u(x, s, t)                  (noise at 0, data at 1)
    MeanFlow     u(x_s, s, t) = v(x_s, s) + (t - s) du/ds,  du/ds = v . grad_x u + d_s u
                 one forward-mode tangent along (v, 1, 0) in (x, s, t), i.e. (v, 1, -1) in
                 (x, s, h); the target is held fixed, so the backward is the ordinary one
    shortcut     u(x, s, s + 2d) = [u'(x, s, s + d) + u'(x + d u'(x, s, s + d), s + d, s + 2d)] / 2
                 with u' the EMA teacher (queried at h = 0, the velocity, for the smallest d)

A batch's first rows are plain flow matching (s = t, h = 0, target x1 - x0), its last
``n_map`` rows carry the map's target.  The loss is a weighted mean square,

    L = 1/(B D) sum_i w_i ||u_i - target_i||^2,   w_i = (||u_i - target_i||^2 + c)^(-p)

with w held fixed (MeanFlow's adaptive weight; p = 0 is the plain mean square), so
dL/du_i = 2 w_i (u_i - target_i) / (B D).
"""
import math

import numpy as np
from numba import njit

from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.nn.mlp import (Workspace, input_features, mlp_backward, mlp_forward,
                            wave_tangent_cpu, zero_grad)
from fmnumpy.nn.tangents import mlp_forward_jvp
from fmnumpy.ode.solvers import solve_in_chunks
from fmnumpy.euclidean.paths import straight_path
from fmnumpy.euclidean.step import hyper_of, step_chunks
from fmnumpy.train.state import EMA, GRAD, THETA
from fmnumpy.train.times import time_from_uniform
from fmnumpy.train.update import apply_update

OBJECTIVES = ("fm", "meanflow", "shortcut")
MEANFLOW, SHORTCUT = 1, 2                  # the compiled code's objective codes
MAP_STREAM = 3                             # purpose tag of the map rows' draws
SHORTCUT_LEVELS = 7                        # teacher jumps d = 1/2 .. 1/128 (targets 1 .. 1/64)
WEIGHT_EPS = 1e-3                          # c of the adaptive weight


def objective_code(objective):
    """The compiled code of a map objective (1 meanflow, 2 shortcut); 0 for "fm"."""
    key = str(objective).lower()
    if key not in OBJECTIVES:
        raise FmnumpyError(f"unknown objective {objective!r}; choose one of: "
                           + ", ".join(OBJECTIVES))
    return OBJECTIVES.index(key)


# ----------------------------------------------------------------------------
# the second time's input block, its tangent beside it
# ----------------------------------------------------------------------------

def gap_feature(h, k):
    """(sin(w h), 1 - cos(w h)), w = pi 2^k: frequency k of the gap's block, zero at h = 0."""
    w = math.pi * 2.0 ** k
    return math.sin(w * h), 1.0 - math.cos(w * h)


def gap_tangent(sk, omck, k, dh):
    """d/dtau of :func:`gap_feature` when h moves by dh: (w cos(w h), w sin(w h)) dh, from
    sk = sin(w h) and omck = 1 - cos(w h)."""
    w = math.pi * 2.0 ** k
    return w * (1.0 - omck) * dh, w * sk * dh


gap_feature_cpu = njit(cache=True, inline="always")(gap_feature)
gap_tangent_cpu = njit(cache=True, inline="always")(gap_tangent)


@njit(cache=True)
def map_features(x, s, h, feats, X):
    """X = [input_features(x, s), (label columns untouched), h, gap features of h]:
    the inputs of u(x, s, s + h); x (B, D), s, h (B,), X (B, F)."""
    n_freq = feats[0]
    input_features(x, s, feats, X)
    off = X.shape[1] - 1 - 2 * n_freq
    for i in range(x.shape[0]):
        X[i, off] = h[i]
        for k in range(n_freq):
            X[i, off + 1 + 2 * k], X[i, off + 2 + 2 * k] = gap_feature_cpu(h[i], k)


@njit(cache=True)
def map_tangents(X, vx, ds, dh, feats, U):
    """U (B, F) = dX/dtau of :func:`map_features` when x moves by vx (B, D), s by ds and
    h by dh (scalars), read off X: the x columns vx, the plane waves (mlp.wave_tangent
    with b . vx), the time features of s (the same rule with ds), label columns 0, the
    gap block (:func:`gap_tangent`)."""
    n_freq, K, b = feats
    B, D = vx.shape
    J = b.shape[0]
    E = D + 2 * K * J
    off = X.shape[1] - 1 - 2 * n_freq
    for i in range(B):
        for f in range(X.shape[1]):
            U[i, f] = 0.0
        for d in range(D):
            U[i, d] = vx[i, d]
        for j in range(J):
            bv = 0.0
            for d in range(D):
                bv += b[j, d] * vx[i, d]
            for k in range(K):
                c = D + 2 * (k * J + j)
                U[i, c], U[i, c + 1] = wave_tangent_cpu(X[i, c], X[i, c + 1], k, bv)
        U[i, E] = ds
        for k in range(n_freq):
            c = E + 1 + 2 * k
            U[i, c], U[i, c + 1] = wave_tangent_cpu(X[i, c], X[i, c + 1], k, ds)
        U[i, off] = dh
        for k in range(n_freq):
            c = off + 1 + 2 * k
            U[i, c], U[i, c + 1] = gap_tangent_cpu(X[i, c], X[i, c + 1], k, dh)


@njit(cache=True)
def map_forward(theta, net, x, s, h, X, A, Z):
    """u(x, s, s + h) (B, D): :func:`map_features` then the MLP (a view into A)."""
    sizes, kind, feats = net
    map_features(x, s, h, feats, X)
    return mlp_forward(theta, sizes, kind, X, A, Z)


@njit(cache=True)
def map_forward_jvp(theta, net, x, s, h, vx, X, A, U, T1, T2):
    """u(x, s, s + h) and its derivative along (vx, 1, 0) in (x, s, t), that is (vx, 1, -1)
    in (x, s, h): (u (B, D), du (B, D)); U (B, F), T1, T2 scratch (``tangents.py``)."""
    sizes, kind, feats = net
    map_features(x, s, h, feats, X)
    map_tangents(X, vx, 1.0, -1.0, feats, U)
    B, F = U.shape
    u, du = mlp_forward_jvp(theta, sizes, kind, X, A, U.reshape((1, B, F)), T1, T2)
    return u, du[0]


# ----------------------------------------------------------------------------
# the targets of the map rows
# ----------------------------------------------------------------------------

@njit(cache=True)
def meanflow_target(theta, ema, net, xs, s, h, vs, work, tgt, teacher):
    """tgt = v + h du/ds (B, D): u's tangent along (v, 1, 0) at (xs, s, s + h), MeanFlow's
    identity u = v + (t - s) du/ds, with v the conditional velocity vs (the paper), or
    with ``teacher`` the EMA network's own velocity u'(xs, s, s) (written into vs)."""
    X, A, U, T1, T2 = work
    if teacher:
        z = np.zeros_like(s)
        vs[:] = map_forward(ema, net, xs, s, z, X, A, A[:0])
    _, du = map_forward_jvp(theta, net, xs, s, h, vs, X, A, U, T1, T2)
    for i in range(xs.shape[0]):
        for d in range(xs.shape[1]):
            tgt[i, d] = vs[i, d] + h[i] * du[i, d]


@njit(cache=True)
def shortcut_target(ema, net, xs, s, h, g, work, tgt, y, sm):
    """tgt = (u1 + u2) / 2 (B, D) for jumps of h = 2d: u1 = u'(xs, s, s + d), y = xs + d u1,
    u2 = u'(y, s + d, s + 2d), u' the EMA teacher queried with gap g (d, or 0: the
    velocity); y (B, D), sm (B,) scratch."""
    X, A, _, _, _ = work
    Z = A[:0]
    u1 = map_forward(ema, net, xs, s, g, X, A, Z)
    for i in range(xs.shape[0]):
        d = 0.5 * h[i]
        sm[i] = s[i] + d
        for k in range(xs.shape[1]):
            tgt[i, k] = 0.5 * u1[i, k]
            y[i, k] = xs[i, k] + d * u1[i, k]
    u2 = map_forward(ema, net, y, sm, g, X, A, Z)
    for i in range(xs.shape[0]):
        for k in range(xs.shape[1]):
            tgt[i, k] += 0.5 * u2[i, k]


# ----------------------------------------------------------------------------
# the loss and its gradient
# ----------------------------------------------------------------------------

@njit(cache=True)
def weighted_loss(u, tgt, p, c, du):
    """L = 1/(B D) sum_i w_i ||u_i - tgt_i||^2 and du = dL/du (B, D), w_i =
    (||u_i - tgt_i||^2 + c)^(-p) held fixed (p = 0: the plain mean square)."""
    B, D = u.shape
    total = 0.0
    for i in range(B):
        r = 0.0
        for d in range(D):
            e = u[i, d] - tgt[i, d]
            r += e * e
        w = 1.0 if p == 0.0 else (r + c) ** (-p)
        total += w * r
        for d in range(D):
            du[i, d] = 2.0 * w * (u[i, d] - tgt[i, d]) / (B * D)
    return total / (B * D)


@njit(cache=True)
def map_loss_and_grad(theta, ema, dtheta, net, obj, batch, work):
    """L(theta) on ``batch`` and dtheta = dL/dtheta (overwritten).

    obj = (code, n_map, p, c, teacher): MEANFLOW or SHORTCUT, the map rows (the last n_map),
    the weight's power and offset, MeanFlow's velocity from the EMA teacher (else x1 - x0).
    batch = (x0, x1, s, h, g): (B, D), (B, D), s, h, g (B,), h = 0 on the plain rows, g the
    shortcut teacher's gap.  work = (xs, vs, tgt, du, y, sm, X, A, Z, G1, G2, S, U, T1, T2)
    (:class:`MapWork`)."""
    sizes, kind, feats = net
    code, n_map, p, c, teacher = obj
    x0, x1, s, h, g = batch
    xs, vs, tgt, du, y, sm, X, A, Z, G1, G2, S, U, T1, T2 = work
    straight_path(x0, x1, s, 0.0, xs, vs)      # the path at s and its velocity
    tgt[:] = vs                                 # the plain rows' target
    lo = x0.shape[0] - n_map
    if n_map > 0:
        part = (X[lo:], A, U[lo:], T1, T2)
        if code == MEANFLOW:
            meanflow_target(theta, ema, net, xs[lo:], s[lo:], h[lo:], vs[lo:], part, tgt[lo:],
                            teacher)
        else:
            shortcut_target(ema, net, xs[lo:], s[lo:], h[lo:], g[lo:], part, tgt[lo:],
                            y[lo:], sm[lo:])
    u = map_forward(theta, net, xs, s, h, X, A, Z)
    loss = weighted_loss(u, tgt, p, c, du)
    zero_grad(dtheta)
    mlp_backward(du, theta, sizes, kind, X, A, Z, dtheta, G1, G2, S, X[:0])
    return loss


class MapWork:
    """The buffers of :func:`map_loss_and_grad` for batch B."""

    def __init__(self, sizes, batch, dtype=DTYPE):
        B, D, F = int(batch), int(sizes[-1]), int(sizes[0])
        self.rows = tuple(np.zeros((B, D), dtype=dtype) for _ in range(5))   # xs vs tgt du y
        self.sm = np.zeros(B, dtype=dtype)
        self.ws = Workspace(sizes, B, dtype)
        self.U = np.zeros((B, F), dtype=dtype)
        self.T = tuple(np.zeros(B * int(sizes[1:].max()), dtype=dtype) for _ in range(2))

    def buffers(self):
        return self.rows + (self.sm,) + self.ws.buffers() + (self.U,) + self.T


@njit(cache=True)
def map_train_steps(state, net, obj, batches, hypers, work, losses):
    """n steps of :func:`map_loss_and_grad` and ``update.apply_update`` in one call; the
    batches stacked (n, ...), one hyper row per step (as ``step.train_steps``); returns
    the steps taken (n, or the index of the first non-finite loss)."""
    X0, X1, S, H, G = batches
    for k in range(X0.shape[0]):
        losses[k] = map_loss_and_grad(state[THETA], state[EMA], state[GRAD], net, obj,
                                      (X0[k], X1[k], S[k], H[k], G[k]), work)
        losses[k], _ = apply_update(state, losses[k], hyper_of(hypers[k]))
        if not np.isfinite(losses[k]):
            return k
    return X0.shape[0]


# ----------------------------------------------------------------------------
# the times of each row
# ----------------------------------------------------------------------------

class MapTimes:
    """(s, h, g) (n, B) of each step: the plain rows keep the stream's t (s = t, h = g = 0);
    the last ``n_map`` rows get the objective's times from ``default_rng([seed, 3, k])``
    for data chunk k, so a step's times are a function of (seed, step) as its data are
    (``stream.BatchStream``).

    MeanFlow: two draws of t = 1 - (1 - u)^K (K = ``time_power``, the map's own; 1 is
    uniform), s = min, t = max.
    Shortcut: a level m uniform in 0..L-1, the teacher's jump d = 2^-(m+1), the row's
    jump h = 2d starting at s = j d, j uniform in 0..1/d - 2; g = d, or 0 at the smallest d.
    """

    def __init__(self, code, n_map, time_power, seed, chunk):
        self.code, self.n_map, self.time_power = code, int(n_map), float(time_power)
        self.seed, self.chunk = int(seed), int(chunk)
        self.k = -1

    def _fill(self, k, t):
        C, B = t.shape
        s, h, g = t.astype(np.float64), np.zeros((C, B)), np.zeros((C, B))
        m = self.n_map
        rng = np.random.default_rng([self.seed, MAP_STREAM, k])
        if m:
            if self.code == MEANFLOW:
                a, b = (time_from_uniform(rng.random((C, m)), self.time_power)
                        for _ in range(2))
                lo, hi = np.minimum(a, b), np.maximum(a, b)
                s[:, B - m:], h[:, B - m:] = lo, hi - lo
            else:
                level = rng.integers(0, SHORTCUT_LEVELS, size=(C, m))
                d = 0.5 ** (level + 1)
                j = np.floor(rng.random((C, m)) * (2.0 ** (level + 1) - 1.0))
                s[:, B - m:], h[:, B - m:] = j * d, 2.0 * d
                g[:, B - m:] = np.where(level == SHORTCUT_LEVELS - 1, 0.0, d)
        self.s, self.h, self.g = (a.astype(t.dtype) for a in (s, h, g))
        self.k = k

    def times(self, step, n, t_chunk):
        """(s, h, g) (n, B) of steps [step, step + n) in one chunk; t_chunk (C, B) the
        stream's times of that chunk."""
        k, r = divmod(step, self.chunk)
        if k != self.k:
            self._fill(k, t_chunk)
        return self.s[r:r + n], self.h[r:r + n], self.g[r:r + n]


class MapStepper:
    """Steps of :func:`map_train_steps` on the host for ``train.run``: the twin of
    ``step.CpuStepper`` for a flow map (serial, BLAS's threads)."""

    def __init__(self, spec, opt, objective, map_fraction, power, batch, time_power, seed,
                 teacher=False):
        from fmnumpy import config
        code = objective_code(objective)
        n_map = int(round(float(map_fraction) * int(batch)))
        self.net = (spec.sizes, spec.kind, spec.feats)
        self.obj = (np.int64(code), np.int64(n_map), float(power), WEIGHT_EPS, bool(teacher))
        self.opt = opt
        self.work = MapWork(spec.sizes, batch).buffers()
        self.times = MapTimes(code, n_map, time_power, seed, config.DATA_CHUNK_STEPS)

    def run(self, state, stream, n, total):
        """Up to n steps (``step.step_chunks``); the 1-based step of a non-finite loss, or 0."""
        def take(s, m, batch, hypers, losses):
            x0, x1, _, _ = batch
            S, H, G = self.times.times(s, m, stream.t)
            return map_train_steps(state.buf, self.net, self.obj, (x0, x1, S, H, G), hypers,
                                   self.work, losses)
        return step_chunks(state, stream, n, total, self.opt, take)

    def pull(self, state):
        """The state already lives on the host."""

    interrupted = pull


# ----------------------------------------------------------------------------
# sampling: K jumps of the map
# ----------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def map_jumps(theta, net, x, t0, t1, K, X, A, s, h, traj):
    """x (B, D) moved in place by K jumps of the map from t0 to t1: x <- x + h u(x, s, s + h)
    with h = (t1 - t0) / K; traj (K + 1, B, D) records the states when it has rows."""
    dt = (t1 - t0) / K
    Z = A[:0]
    if traj.shape[0] > 0:
        traj[0] = x
    for k in range(K):
        for i in range(x.shape[0]):
            s[i] = t0 + k * dt
            h[i] = dt
        u = map_forward(theta, net, x, s, h, X, A, Z)
        for i in range(x.shape[0]):
            for d in range(x.shape[1]):
                x[i, d] += dt * u[i, d]
        if traj.shape[0] > 0:
            traj[k + 1] = x


def check_jumps(spec, steps, t0, t1, labels, guidance):
    """K = ``steps`` checked for jumps of ``spec``'s flow map on either device; one line
    for a network that is no map, K not a positive integer, t1 <= t0, labels, guidance."""
    if not spec.flow_map:
        raise FmnumpyError("method 'jump' needs a flow map; this model was trained with "
                           "objective 'fm': sample it with an ODE method, or train with "
                           "objective='meanflow' or 'shortcut'")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise FmnumpyError(f"steps, the number of jumps, must be an integer >= 1, got {steps!r}")
    K = positive_int("steps (the number of jumps)", steps)
    if not t1 > t0:
        raise FmnumpyError(f"a flow map jumps forward in time, from noise to data; got t0 "
                           f"{t0} and t1 {t1}")
    if labels is not None or guidance != 1.0:
        raise FmnumpyError("flow maps are unconditional here: drop labels and guidance")
    return K


def jump(theta, spec, x0, steps, t0=0.0, t1=1.0, record=0, labels=None, guidance=1.0,
         chunk=4096):
    """K = ``steps`` jumps of a flow map from t0 to t1 (t1 > t0): x(t1) (N, D), and with
    ``record`` the states after each jump (K + 1, N, D).  Rows in chunks of ``chunk`` on
    Numba's threads (``ode.solvers.solve_in_chunks``).  The GPU's twin:
    ``cuda.cuda_sample(..., method="jump")``."""
    K = check_jumps(spec, steps, t0, t1, labels, guidance)
    x = np.array(x0, dtype=DTYPE, order="C", copy=True)
    N = x.shape[0]
    traj = np.zeros((K + 1 if record else 0, N, spec.dim), dtype=DTYPE)
    net = (spec.sizes, spec.kind, spec.feats)
    theta = np.asarray(theta, dtype=DTYPE)

    def solve(lo, hi):
        ws = Workspace(spec.sizes, hi - lo)
        s, h = np.empty(hi - lo, DTYPE), np.empty(hi - lo, DTYPE)
        map_jumps(theta, net, x[lo:hi], float(t0), float(t1), K, ws.X, ws.A, s, h,
                  traj[:, lo:hi] if record else traj[:, :0])

    solve_in_chunks(N, chunk, solve)
    return (x, traj) if record else x


def jump_frames(traj, per_jump=10):
    """Frames of a GIF of the jumps: the states traj (K + 1, N, D) and ``per_jump`` - 1
    points on each straight jump between them (a jump moves along a line), (K per_jump + 1,
    N, D)."""
    traj = np.asarray(traj)
    w = np.linspace(0.0, 1.0, per_jump + 1)[:-1, None, None]
    parts = [(1.0 - w) * a + w * b for a, b in zip(traj[:-1], traj[1:])]
    return np.concatenate(parts + [traj[-1:]], axis=0)
