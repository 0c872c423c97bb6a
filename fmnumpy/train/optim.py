"""Adam / AdamW on the flat parameter buffer, gradient-norm clipping, EMA of
the weights and the learning-rate schedule.

P is the number of parameters.  The element update is written once
(:func:`adam_element`) and compiled for the CPU here and for the GPU in
``fmnumpy.cuda``.  Derivation: ``docs/gradients.md#adam``.

Adam (Kingma & Ba 2015, Algorithm 1), at step k = 1, 2, ...:

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    theta <- theta - lr * mhat / (sqrt(vhat) + eps),  mhat = m / (1 - b1^k),
                                                      vhat = v / (1 - b2^k)

written, as PyTorch does, as theta -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps).
Weight decay: Adam adds wd * theta to g (L2); AdamW (Loshchilov & Hutter 2019)
first shrinks theta <- theta (1 - lr wd), decoupled from the moments.
"""
import math

import numpy as np
from numba import njit

from fmnumpy.errors import FmnumpyError


def adam_element(p, g, m, v, lr, b1, b2, eps, wd, decoupled, bc1, bc2):
    """One parameter's Adam/AdamW update -> (p, m, v).  bc1 = 1 - b1^k,
    bc2 = 1 - b2^k are the bias corrections of step k."""
    if wd != 0.0:
        if decoupled:
            p = p * (1.0 - lr * wd)
        else:
            g = g + wd * p
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    denom = math.sqrt(v) / math.sqrt(bc2) + eps
    p = p - (lr / bc1) * m / denom
    return p, m, v


def ema_element(e, p, decay):
    """Exponential moving average of one weight: e <- decay e + (1 - decay) p."""
    return decay * e + (1.0 - decay) * p


adam_element_cpu = njit(cache=True, inline="always")(adam_element)
ema_element_cpu = njit(cache=True, inline="always")(ema_element)


NORM_LANES = 8     # grad_norm's partial sums


@njit(cache=True)
def grad_norm(dtheta):
    """||g||_2 accumulated in float64: NORM_LANES partial sums (entry i goes to sum
    i mod NORM_LANES), added in order at the end.  The order is fixed, so the norm
    is the same on every machine; the independent sums vectorise, where one running
    sum waits on each addition."""
    P = dtheta.shape[0]
    lanes = np.zeros(NORM_LANES)
    body = P - P % NORM_LANES
    for i in range(0, body, NORM_LANES):
        for j in range(NORM_LANES):
            gi = np.float64(dtheta[i + j])
            lanes[j] += gi * gi
    for i in range(body, P):
        gi = np.float64(dtheta[i])
        lanes[i - body] += gi * gi
    s = 0.0
    for j in range(NORM_LANES):
        s += lanes[j]
    return math.sqrt(s)


def clip_scale(norm, max_norm):
    """The factor that clips a gradient of norm ``norm`` to ``max_norm``:
    max_norm / (norm + 1e-6) when norm > max_norm > 0, else 1 (no clipping).
    Compiled for the CPU here and for the GPU in ``cuda/step.py``."""
    if max_norm > 0.0 and norm > max_norm:
        return max_norm / (norm + 1e-6)
    return 1.0


clip_scale_cpu = njit(cache=True, inline="always")(clip_scale)


@njit(cache=True)
def clip_grad_norm(dtheta, max_norm):
    """Scale g by :func:`clip_scale` (max_norm <= 0 disables); returns ||g||
    before clipping."""
    n = grad_norm(dtheta)
    c = clip_scale_cpu(n, max_norm)
    if c != 1.0:
        for i in range(dtheta.shape[0]):
            dtheta[i] *= c
    return n


@njit(cache=True, error_model="numpy")   # no zero-division check: the loop vectorises
def adam_update(theta, dtheta, m, v, k, lr, b1, b2, eps, wd, decoupled):
    """Apply step k (1-based) of Adam/AdamW to the flat buffers (P,).  The divisors
    are positive (:class:`AdamConfig` keeps eps > 0 and the betas below 1); the
    vectorised loop was measured 4.4x faster than with Python's division check,
    with the same bits (bench/results/adam_update.md)."""
    bc1 = 1.0 - b1 ** k
    bc2 = 1.0 - b2 ** k
    for i in range(theta.shape[0]):
        theta[i], m[i], v[i] = adam_element_cpu(theta[i], dtheta[i], m[i], v[i], lr, b1, b2,
                                                eps, wd, decoupled, bc1, bc2)


@njit(cache=True)
def ema_update(ema, theta, decay):
    """ema <- decay ema + (1 - decay) theta over the flat buffer."""
    for i in range(theta.shape[0]):
        ema[i] = ema_element_cpu(ema[i], theta[i], decay)


def ema_decay_at(k, decay):
    """EMA decay used at step k: min(decay, (1 + k) / (10 + k)), so the average
    is not dominated by the random initial weights early in training."""
    return min(decay, (1.0 + k) / (10.0 + k))


def learning_rate(k, lr, total, warmup=0, schedule="constant", lr_min=0.0):
    """Learning rate at step k (1-based) of ``total``: linear warm-up over
    ``warmup`` steps, then constant or cosine decay to ``lr_min``."""
    if warmup > 0 and k <= warmup:
        return lr * k / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = max(1, total - warmup)
        frac = min(1.0, (k - warmup) / span)
        return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * frac))
    raise FmnumpyError(f"unknown schedule {schedule!r}; choose one of: constant, cosine")


class AdamConfig:
    """Optimizer hyper-parameters (plain data, saved in checkpoints)."""

    FIELDS = ("lr", "betas", "eps", "weight_decay", "decoupled", "clip",
              "ema_decay", "warmup", "schedule", "lr_min")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=True, clip=0.0, ema_decay=0.999, warmup=0,
                 schedule="constant", lr_min=0.0):
        if not (np.isfinite(lr) and lr > 0):
            raise FmnumpyError(f"learning rate must be a positive number, got {lr}")
        if len(tuple(betas)) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise FmnumpyError(f"Adam betas must be two numbers in [0, 1), got {betas}")
        if not (np.isfinite(eps) and eps > 0):
            raise FmnumpyError(f"Adam eps must be a positive number, got {eps}")
        if schedule not in ("constant", "cosine"):
            raise FmnumpyError(f"unknown schedule {schedule!r}; choose one of: constant, cosine")
        for name, value in (("weight_decay", weight_decay), ("clip", clip), ("lr_min", lr_min)):
            if not (np.isfinite(value) and value >= 0):
                raise FmnumpyError(f"{name} must be 0 or a positive number, got {value}")
        if not 0.0 <= ema_decay < 1.0:
            raise FmnumpyError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if int(warmup) != warmup or warmup < 0:
            raise FmnumpyError(f"warmup must be a whole number of steps >= 0, got {warmup}")
        self.lr, self.betas, self.eps = float(lr), tuple(float(b) for b in betas), float(eps)
        self.weight_decay, self.decoupled = float(weight_decay), bool(decoupled)
        self.clip, self.ema_decay = float(clip), float(ema_decay)
        self.warmup, self.schedule, self.lr_min = int(warmup), schedule, float(lr_min)

    def to_dict(self):
        return {f: (list(getattr(self, f)) if f == "betas" else getattr(self, f))
                for f in self.FIELDS}

    @classmethod
    def from_dict(cls, d):
        return cls(**{f: d[f] for f in cls.FIELDS if f in d})


OPTIMIZERS = ("adam", "adamw")


def adam_config(optimizer, lr, weight_decay, clip, ema_decay, warmup, schedule, lr_min):
    """The AdamConfig of an estimator's parameters: ``optimizer`` "adam" (weight decay
    added to the gradient) or "adamw" (decoupled weight decay)."""
    if optimizer not in OPTIMIZERS:
        raise FmnumpyError(f"unknown optimizer {optimizer!r}; choose one of: "
                           + ", ".join(OPTIMIZERS))
    return AdamConfig(lr=lr, weight_decay=weight_decay, decoupled=(optimizer == "adamw"),
                      clip=clip, ema_decay=ema_decay, warmup=warmup, schedule=schedule,
                      lr_min=lr_min)
