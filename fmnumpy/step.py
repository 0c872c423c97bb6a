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
                                                     labels (B,) int64 or (0,) unconditional
    hyper = (k, lr, b1, b2, eps, wd, decoupled, clip, ema_decay)   Adam step k (1-based)
    work  = (xt, ut, dv, X, A, Z, G1, G2, S)         buffers (:class:`StepWork`)

and the training state is the (5, P) buffer of ``state.TrainState``.  The
compiled code is serial; the threads are BLAS's, inside the matrix products
(running Numba threads that each call SciPy's OpenBLAS was measured 15x slower:
its calls serialise).  :class:`CpuStepper` takes steps of this function for
``train.run``; ``cuda.stepper.CudaStepper`` is its GPU twin.
"""
import numpy as np
from numba import njit

from .config import DTYPE
from .loss import cfm_loss_backward, cfm_loss_forward
from .mlp import (Workspace, label_features, label_offset, mlp_backward, velocity,
                  zero_grad)
from .optim import adam_update, clip_grad_norm, ema_decay_at, ema_update, learning_rate
from .paths import fill_path
from .state import EMA, GRAD, M, THETA, V


@njit(cache=True)
def loss_and_grad(theta, dtheta, net, path, batch, work):
    """L(theta) on ``batch`` and dtheta = dL/dtheta (overwritten); the tuples are
    described in the module docstring."""
    sizes, kind, feats = net
    code, sigma = path
    x0, x1, t, eps, y = batch
    xt, ut, dv, X, A, Z, G1, G2, S = work
    fill_path(code, x0, x1, t, sigma, eps, xt, ut)
    if y.shape[0] > 0:                       # the label's one-hot, after the time features
        label_features(y, label_offset(x0.shape[1], feats), X)
    v = velocity(theta, sizes, kind, feats, xt, t, X, A, Z)
    loss = cfm_loss_forward(v, ut)
    cfm_loss_backward(v, ut, dv)
    zero_grad(dtheta)
    mlp_backward(dv, theta, sizes, kind, X, A, Z, dtheta, G1, G2, S, X[:0])   # no dL/dX
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


@njit(cache=True)
def apply_update(state, loss, hyper):
    """The step after the gradient, shared by every trainer that steps on the host:
    with dtheta in state[GRAD] and its loss, clip, Adam step k, EMA update; returns
    (loss, ||g||).  A non-finite loss or gradient leaves the state untouched."""
    k, lr, b1, b2, adam_eps, wd, decoupled, clip, ema_decay = hyper
    theta, dtheta = state[THETA], state[GRAD]
    if not np.isfinite(loss):
        return loss, np.nan
    gnorm = clip_grad_norm(dtheta, clip)      # dtheta is scratch: clipping it is harmless
    if not np.isfinite(gnorm):
        return np.inf, gnorm
    adam_update(theta, dtheta, state[M], state[V], k, lr, b1, b2, adam_eps, wd, decoupled)
    ema_update(state[EMA], theta, ema_decay)
    return loss, gnorm


class StepWork:
    """The buffers of one step for batch B (``work`` above): xt, ut, dv (B, D)
    and the network's ``mlp.Workspace``."""

    def __init__(self, sizes, batch, dtype=DTYPE):
        D = int(sizes[-1])
        self.xt, self.ut, self.dv = (np.zeros((int(batch), D), dtype=dtype) for _ in range(3))
        self.ws = Workspace(sizes, batch, dtype)

    def buffers(self):
        return (self.xt, self.ut, self.dv) + self.ws.buffers()


def hyper_at(opt, k, total):
    """The ``hyper`` tuple of 1-based step k of a run of ``total`` steps
    (optim.AdamConfig ``opt``: schedule, EMA warm-up)."""
    b1, b2 = opt.betas
    lr = learning_rate(k, opt.lr, total, opt.warmup, opt.schedule, opt.lr_min)
    return (k, lr, b1, b2, opt.eps, opt.weight_decay, opt.decoupled, opt.clip,
            ema_decay_at(k, opt.ema_decay))


class CpuStepper:
    """Steps of :func:`train_step` on the host, for ``train.run``.

    spec: mlp.MLPSpec; opt: optim.AdamConfig; path: (code, sigma); batch: B;
    noise: a ``train.PathNoise`` (the eps of each step of the sb and sigma paths, or
    empty)."""

    def __init__(self, spec, opt, path, batch, noise, dtype=DTYPE):
        self.net = (spec.sizes, spec.kind, spec.feats)
        self.path, self.opt, self.noise = (int(path[0]), float(path[1])), opt, noise
        self.work = StepWork(spec.sizes, batch, dtype).buffers()

    def run(self, state, stream, n, total):
        """Take up to n steps of a run of ``total`` on ``stream``'s batches; returns
        the 1-based step whose loss was not finite (state left before it), else 0."""
        for _ in range(n):
            k = state.step + 1
            x0, x1, t = stream.batch_at(state.step)
            batch = (x0, x1, t, self.noise.noise_at(state.step), stream.labels_at(state.step))
            loss, _ = train_step(state.buf, self.net, self.path, batch,
                                 hyper_at(self.opt, k, total), self.work)
            if not np.isfinite(loss):
                return k
            state.step = k
            state.losses.append(float(loss))
        return 0

    def pull(self, state):
        """The state already lives on the host."""

    interrupted = pull
