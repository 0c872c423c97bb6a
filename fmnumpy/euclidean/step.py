"""One training step of conditional flow matching, fused into one compiled call.

Dimension letters: B batch, D data dimension, P parameters.

    xt, ut = path(x0, x1, t[, eps])           paths.fill_path
    v      = MLP(concat(xt, features(t)))     mlp.velocity
    L      = mean (v - ut)^2                  loss.cfm_loss_forward
    dv     = dL/dv                            loss.cfm_loss_backward
    dtheta = backprop(dv)                     mlp.mlp_backward
    theta  = Adam(theta, dtheta); ema         apply_update: optim.clip_grad_norm,
                                              optim.adam_update, optim.ema_update

Each part is its own function (and tested on its own).  The compiled functions
take their arguments as a few tuples, so that a reader sees what goes together:

    net   = (sizes, kind, feats)                     the network (mlp.MLPSpec.feats)
    path  = (code, sigma)                            paths.fill_path's path and parameter
    batch = (x0, x1, t, eps, y)                      (B, D), (B, D), (B,), (B, D) or (0, D),
                                                     labels (B,) int64, a condition block
                                                     (B, K + 1), or (0,) unconditional
    hyper = (k, lr, b1, b2, eps, wd, decoupled, clip, ema_decay)   Adam step k (1-based)
    work  = (xt, ut, dv, X, A, Z, G1, G2, S)         buffers (:class:`StepWork`)

and the training state is the (5, P) buffer of ``state.TrainState``.  The
compiled code is serial; the threads are BLAS's, inside the matrix products
(running Numba threads that each call SciPy's OpenBLAS was measured 15x slower:
its calls serialise).  :class:`CpuStepper` takes steps of this function for
``train.run``; ``cuda.stepper.CudaStepper`` is its GPU twin.
"""
import numpy as np
from numba import njit, prange

from fmnumpy.config import DTYPE
from fmnumpy.nn.loss import cfm_loss_backward, cfm_loss_forward
from fmnumpy.nn.mlp import (EmbedWork, StepWork, condition_features, embed_backward,
    embed_forward, label_offset, mlp_backward, param_count, velocity, zero_grad)
from fmnumpy.euclidean.paths import fill_path
from fmnumpy.train.state import GRAD, THETA
from fmnumpy.train.update import apply_update, hyper_at


@njit(cache=True)
def loss_and_grad(theta, dtheta, net, path, batch, work):
    """L(theta) on ``batch`` and dtheta = dL/dtheta (overwritten); the tuples are
    described in the module docstring."""
    return loss_grad_input(theta, dtheta, net, path, batch, work, work[3][:0])


@njit(cache=True)
def loss_grad_input(theta, dtheta, net, path, batch, work, dX):
    """:func:`loss_and_grad`, also writing dL/dX (B, F) of the network's input into dX when
    it has rows (an empty dX: skipped)."""
    sizes, kind, feats = net
    code, sigma = path
    x0, x1, t, eps, y = batch
    xt, ut, dv, X, A, Z, G1, G2, S = work
    fill_path(code, x0, x1, t, sigma, eps, xt, ut)
    if y.shape[0] > 0:               # the label's one-hot or the condition, after the time
        condition_features(y, label_offset(x0.shape[1], feats), X)     # features
    v = velocity(theta, sizes, kind, feats, xt, t, X, A, Z)
    loss = cfm_loss_forward(v, ut)
    cfm_loss_backward(v, ut, dv)
    zero_grad(dtheta)
    mlp_backward(dv, theta, sizes, kind, X, A, Z, dtheta, G1, G2, S, dX)
    return loss


@njit(cache=True)
def embedded_loss_and_grad(theta, dtheta, net, embed, path, batch, work, ework):
    """:func:`loss_and_grad` of a network whose condition enters through its embedding
    (mlp.embed_forward): the batch's y holds the condition blocks [c, f] (B, K + 1), the
    network sees [f e(c), f]; embed = (esizes, P_net), MLP_e's layer sizes and where its
    parameters start in theta; ework = mlp.EmbedWork's buffers."""
    sizes, kind, feats = net
    esizes, P = embed
    x0, x1, t, eps, y = batch
    C, Ae, Ze, G1e, G2e, Se, Y, dX, dE = ework
    embed_forward(theta[P:], esizes, kind, y, C, Ae, Ze, Y)
    loss = loss_grad_input(theta, dtheta, net, path, (x0, x1, t, eps, Y), work, dX)
    embed_backward(dX, label_offset(x0.shape[1], feats), y, theta[P:], esizes, kind,
                   (C, Ae, Ze, G1e, G2e, Se), dtheta[P:], dE, C[:0])
    return loss


@njit(cache=True)
def train_step(state, net, path, batch, hyper, work):
    """Loss, gradient, clipping, Adam step k and EMA update on ``state`` (5, P);
    returns (loss, ||g||).

    Clipping scales g by min(1, clip / ||g||) (clip <= 0: off).  A non-finite
    loss or gradient leaves theta, the moments and the EMA untouched, so the
    caller can stop with the last good weights.
    """
    loss = loss_and_grad(state[THETA], state[GRAD], net, path, batch, work)
    return apply_update(state, loss, hyper)


# ----------------------------------------------------------------------------
# the data-parallel step: slices of the batch on Numba's threads
# ----------------------------------------------------------------------------
# For narrow networks the matrix products of one step are too small for BLAS's
# threads to pay; instead each of T threads takes a slice of the batch's rows with
# single-threaded BLAS, and the slices' gradients are summed.  The loss is a mean
# over the B rows, so with n_s rows in slice s
#
#     L = sum_s (n_s / B) L_s,      dL/dtheta = sum_s (n_s / B) dL_s/dtheta.

class SplitWork:
    """The buffers of the data-parallel step (``split`` of :func:`split_loss_and_grad`):
    for each of T threads a gradient row and the buffers of :class:`StepWork` for a
    slice of ceil(B / T) rows, stacked along a leading T axis (Numba's parallel loop
    takes arrays, not tuples of them)."""

    def __init__(self, sizes, batch, threads, dtype=DTYPE):
        T = max(1, min(int(threads), int(batch)))
        rows = -(-int(batch) // T)
        P = param_count(sizes)
        parts = [StepWork(sizes, rows, dtype).buffers() for _ in range(T)]
        self.grads = np.zeros((T, P), dtype=dtype)
        self.losses = np.zeros(T)
        self.works = tuple(np.stack([p[i] for p in parts]) for i in range(len(parts[0])))

    def buffers(self):
        return (self.grads, self.losses) + self.works


@njit(cache=True, parallel=True)
def split_loss_and_grad(theta, dtheta, net, path, batch, split):
    """:func:`loss_and_grad` with the batch's rows cut into T slices solved in
    parallel; split = (grads (T, P), losses (T,), then the nine work buffers of
    :class:`StepWork` stacked (T, ...)).  The same L and dtheta up to the order of
    the sums.  (The tuples are unpacked before the parallel loop and rebuilt in it:
    Numba's parallel loop takes arrays and scalars.)"""
    grads, losses, XT, UT, DV, X, A, Z, G1, G2, S = split
    sizes, kind, feats = net
    n_freq, K, b = feats
    code, sigma = path
    x0, x1, t, eps, y = batch
    B = x0.shape[0]
    T = grads.shape[0]
    rows = (B + T - 1) // T
    for s in prange(T):
        lo = min(B, s * rows)
        hi = min(B, lo + rows)
        n = hi - lo
        losses[s] = 0.0
        grads[s, :] = 0.0                     # an empty slice adds nothing
        if n > 0:
            work = (XT[s, :n], UT[s, :n], DV[s, :n], X[s, :n], A[s], Z[s], G1[s], G2[s], S[s])
            part = (x0[lo:hi], x1[lo:hi], t[lo:hi], eps[lo:hi], y[lo:hi])
            losses[s] = loss_and_grad(theta, grads[s], (sizes, kind, (n_freq, K, b)),
                                      (code, sigma), part, work) * n / B
            for p in range(grads.shape[1]):
                grads[s, p] *= n / B
    loss = 0.0
    for s in range(T):
        loss += losses[s]
    for p in prange(dtheta.shape[0]):
        acc = grads[0, p]
        for s in range(1, T):
            acc += grads[s, p]
        dtheta[p] = acc
    return loss


@njit(cache=True)
def split_train_step(state, net, path, batch, hyper, split):
    """:func:`train_step` with the data-parallel gradient (:func:`split_loss_and_grad`)."""
    loss = split_loss_and_grad(state[THETA], state[GRAD], net, path, batch, split)
    return apply_update(state, loss, hyper)


# ----------------------------------------------------------------------------
# many steps in one compiled call
# ----------------------------------------------------------------------------
# Python would otherwise run once per step: unpacking the step's tuples of arrays
# costs tens of microseconds a call, a tenth of a narrow network's step.  The
# loops below take the batches of n steps stacked, batches = (X0 (n, B, D), X1,
# T (n, B), EPS (n, B, D) or (n, 0, D), Y (n, B) or (n, 0)), and one hyper row per
# step, hypers (n, 9) = (k, lr, b1, b2, eps, wd, decoupled, clip, ema_decay) as
# :func:`hyper_at` gives them; they write each step's loss into losses (n,) and
# return the steps taken: n, or the index of the first non-finite loss (the state
# is left before it, as :func:`apply_update` leaves it).

@njit(cache=True)
def hyper_of(h):
    """The ``hyper`` tuple from a row of ``hypers`` (its k and flag typed back)."""
    return (np.int64(h[0]), h[1], h[2], h[3], h[4], h[5], h[6] != 0.0, h[7], h[8])


@njit(cache=True)
def train_steps(state, net, path, batches, hypers, work, losses):
    """n steps of :func:`train_step` in one call (the block comment above)."""
    X0, X1, T, EPS, Y = batches
    for i in range(X0.shape[0]):
        losses[i], _ = train_step(state, net, path, (X0[i], X1[i], T[i], EPS[i], Y[i]),
                                  hyper_of(hypers[i]), work)
        if not np.isfinite(losses[i]):
            return i
    return X0.shape[0]


@njit(cache=True)
def split_train_steps(state, net, path, batches, hypers, split, losses):
    """n steps of :func:`split_train_step` in one call: :func:`train_steps`' twin."""
    X0, X1, T, EPS, Y = batches
    for i in range(X0.shape[0]):
        losses[i], _ = split_train_step(state, net, path, (X0[i], X1[i], T[i], EPS[i], Y[i]),
                                        hyper_of(hypers[i]), split)
        if not np.isfinite(losses[i]):
            return i
    return X0.shape[0]


@njit(cache=True)
def embedded_train_steps(state, net, embed, path, batches, hypers, work, ework, losses):
    """n steps of :func:`embedded_loss_and_grad` and ``update.apply_update`` in one call:
    :func:`train_steps`' twin for a network with a condition embedding."""
    X0, X1, T, EPS, Y = batches
    for i in range(X0.shape[0]):
        loss = embedded_loss_and_grad(state[THETA], state[GRAD], net, embed, path,
                                      (X0[i], X1[i], T[i], EPS[i], Y[i]), work, ework)
        losses[i], _ = apply_update(state, loss, hyper_of(hypers[i]))
        if not np.isfinite(losses[i]):
            return i
    return X0.shape[0]


def step_chunks(state, stream, n, total, opt, take):
    """Take up to n steps of a run of ``total`` on ``stream``'s batches, a data chunk's steps
    per compiled call: ``take(s, m, (x0, x1, t, y), hypers, losses)`` takes the m steps from
    0-based step s and returns how many it took (fewer: a non-finite loss).  Updates the
    state's step and losses; returns the 1-based step whose loss was not finite, else 0.
    Shared by :class:`CpuStepper` and ``flowmap.MapStepper``."""
    from fmnumpy.euclidean.stream import chunk_steps
    left = n
    while left > 0:
        s = state.step
        m = chunk_steps(s, left)
        hypers = np.array([hyper_at(opt, k, total) for k in range(s + 1, s + m + 1)],
                          dtype=np.float64)
        losses = np.empty(m)
        taken = take(s, m, stream.batches(s, m), hypers, losses)
        state.step = s + taken
        state.losses.extend(losses[:taken].tolist())
        if taken < m:
            return s + taken + 1
        left -= m
    return 0


# The range of widest hidden layers for which CpuStepper takes the data-parallel
# step by default, measured on 2 threads with each variant in its own process
# (bench/results/split_step.md, batch 256): 1.38x at 64 wide, 1.20x at 128 and
# 0.96x at 256 (paired 1.10x: level), and 1.12x for 256 wide at batch 4096
# (bench/results/split_step_4096/).  Outside it (unmeasured) the serial step.
SPLIT_WIDTHS = (64, 256)


class CpuStepper:
    """Steps of :func:`train_step` on the host, for ``train.run``.

    spec: mlp.MLPSpec; opt: optim.AdamConfig; path: (code, sigma); batch: B;
    noise: a ``train.PathNoise`` (the eps of each step of the sb and sigma paths, or
    empty); threads: the data-parallel step's slices (:func:`split_train_step`, with
    single-threaded BLAS) when > 1, else the serial step (BLAS's threads).  By
    default the split step on Numba's threads for networks whose widest layer is in
    ``SPLIT_WIDTHS``, where it was measured faster, the serial one otherwise."""

    def __init__(self, spec, opt, path, batch, noise, dtype=DTYPE, threads=None):
        self.net = (spec.sizes, spec.kind, spec.feats)
        self.path, self.opt, self.noise = (int(path[0]), float(path[1])), opt, noise
        if threads is None:
            import numba
            lo, hi = SPLIT_WIDTHS
            threads = numba.get_num_threads() if lo <= max(spec.hidden) <= hi else 1
        self.threads = max(1, min(int(threads), int(batch)))
        if self.threads > 1:
            self.work = SplitWork(spec.sizes, batch, self.threads, dtype).buffers()
        else:
            self.work = StepWork(spec.sizes, batch, dtype).buffers()

    def run(self, state, stream, n, total):
        """Take up to n steps of a run of ``total`` on ``stream``'s batches, a data
        chunk's steps per compiled call (:func:`train_steps`); returns the 1-based step
        whose loss was not finite (state left before it), else 0."""
        steps = split_train_steps if self.threads > 1 else train_steps

        def take(s, m, batch, hypers, losses):
            x0, x1, t, y = batch
            return steps(state.buf, self.net, self.path, (x0, x1, t, self.noise.noises(s, m), y),
                         hypers, self.work, losses)
        blas = None
        if self.threads > 1:
            from fmnumpy.threads import single_threaded_blas
            blas = single_threaded_blas()
        try:
            return step_chunks(state, stream, n, total, self.opt, take)
        finally:
            if blas is not None:
                blas.restore_original_limits()

    def pull(self, state):
        """The state already lives on the host."""

    interrupted = pull


class EmbeddedStepper(CpuStepper):
    """:class:`CpuStepper` for a network with a condition embedding (``MLPSpec.embed``):
    steps of :func:`embedded_train_steps`, serial (BLAS's threads)."""

    def __init__(self, spec, opt, path, batch, noise, dtype=DTYPE):
        super().__init__(spec, opt, path, batch, noise, dtype, threads=1)
        self.embed = (spec.embed_sizes, spec.n_net_params)
        self.ework = EmbedWork(spec, batch, dtype).buffers()

    def run(self, state, stream, n, total):
        def take(s, m, batch, hypers, losses):
            x0, x1, t, y = batch
            return embedded_train_steps(state.buf, self.net, self.embed, self.path,
                                        (x0, x1, t, self.noise.noises(s, m), y), hypers,
                                        self.work, self.ework, losses)
        return step_chunks(state, stream, n, total, self.opt, take)
