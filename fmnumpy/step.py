"""One training step of conditional flow matching, fused into one compiled call.

Dimension letters: B batch, D data dimension, P parameters.

    xt, ut = path(x0, x1, t)                  paths.straight_path
    v      = MLP(concat(xt, features(t)))     mlp.velocity
    L      = mean (v - ut)^2                  loss.cfm_loss_forward
    dv     = dL/dv                            loss.cfm_loss_backward
    dtheta = backprop(dv)                     mlp.mlp_backward
    theta  = Adam(theta, dtheta); ema         optim.adam_update, optim.ema_update

Each part is its own function (and tested on its own); composing them inside
one ``njit`` function removes the per-call dispatch cost of the small model.
"""
import numpy as np
from numba import njit

from .config import DTYPE
from .loss import cfm_loss_backward, cfm_loss_forward
from .mlp import Workspace, mlp_backward, velocity, zero_grad
from .optim import adam_update, clip_grad_norm, ema_update
from .paths import straight_path


class StepBuffers(Workspace):
    """A :class:`mlp.Workspace` plus the path and loss buffers xt, ut, dv (B, D)."""

    def __init__(self, sizes, batch, dtype=DTYPE):
        super().__init__(sizes, batch, dtype)
        D = int(sizes[-1])
        self.xt = np.zeros((batch, D), dtype=dtype)
        self.ut = np.zeros((batch, D), dtype=dtype)
        self.dv = np.zeros((batch, D), dtype=dtype)


@njit(cache=True)
def loss_and_grad(theta, dtheta, sizes, kind, n_freq, x0, x1, t, sigma_min,
                  xt, ut, dv, X, A, Z, G1, G2, S):
    """L(theta) on the batch (x0, x1, t) and dtheta = dL/dtheta (overwritten)."""
    straight_path(x0, x1, t, sigma_min, xt, ut)
    v = velocity(theta, sizes, kind, n_freq, xt, t, X, A, Z)
    loss = cfm_loss_forward(v, ut)
    cfm_loss_backward(v, ut, dv)
    zero_grad(dtheta)
    mlp_backward(dv, theta, sizes, kind, X, A, Z, dtheta, G1, G2, S)
    return loss


@njit(cache=True)
def train_step(theta, dtheta, m, v2, ema, sizes, kind, n_freq, x0, x1, t, sigma_min,
               k, lr, b1, b2, eps, wd, decoupled, clip, ema_decay,
               xt, ut, dv, X, A, Z, G1, G2, S):
    """Loss, gradient, clipping, Adam step k and EMA update; returns (loss, ||g||).

    A non-finite loss leaves theta, the moments and the EMA untouched, so the
    caller can stop with the last good weights.
    """
    loss = loss_and_grad(theta, dtheta, sizes, kind, n_freq, x0, x1, t, sigma_min,
                         xt, ut, dv, X, A, Z, G1, G2, S)
    if not np.isfinite(loss):
        return loss, np.nan
    gnorm = clip_grad_norm(dtheta, clip)
    if not np.isfinite(gnorm):
        return np.inf, gnorm
    adam_update(theta, dtheta, m, v2, k, lr, b1, b2, eps, wd, decoupled)
    ema_update(ema, theta, ema_decay)
    return loss, gnorm
