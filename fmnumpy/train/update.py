"""The update every family takes after its gradient: clipping, the learning-rate
schedule, Adam or AdamW, the EMA, and the finiteness guard (docs/gradients.md#adam).

``hyper`` is the tuple of one step's hyperparameters (:func:`hyper_at`), the same on
the CPU and the GPU.
"""
import numpy as np
from numba import njit

from fmnumpy.train.optim import (adam_update, clip_grad_norm, ema_decay_at, ema_update,
                                 learning_rate)
from fmnumpy.train.state import EMA, GRAD, M, THETA, V


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


def hyper_at(opt, k, total):
    """The ``hyper`` tuple of 1-based step k of a run of ``total`` steps
    (optim.AdamConfig ``opt``: schedule, EMA warm-up)."""
    b1, b2 = opt.betas
    lr = learning_rate(k, opt.lr, total, opt.warmup, opt.schedule, opt.lr_min)
    return (k, lr, b1, b2, opt.eps, opt.weight_decay, opt.decoupled, opt.clip,
            ema_decay_at(k, opt.ema_decay))
