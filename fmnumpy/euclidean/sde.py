"""Stochastic sampling from a trained velocity (docs/sde.md).

Dimension letters: N particles, D data dimension.

On a Gaussian path xt = alpha_t x1 + sigma_t x0 with x0 ~ N(0, I), the velocity the
network learns is v(x, t) = alpha_t' E[x1 | xt = x] + sigma_t' E[x0 | xt = x], and
x = alpha_t E[x1 | x] + sigma_t E[x0 | x].  Solving the two for the noise,

    E[x0 | x] = (alpha_t v - alpha_t' x) / (alpha_t sigma_t' - alpha_t' sigma_t),
    score(x, t) = grad log p_t(x) = -E[x0 | x] / sigma_t

(the straight path, alpha = t, sigma = 1 - t: score = (t v - x) / (1 - t)).  For any
g(t) the SDE

    dx = [v + g(t)^2 / 2 score] dt + g(t) dW

has the ODE's marginals p_t (the Fokker-Planck equations agree: the extra drift's
divergence cancels the diffusion).  With g(t)^2 = noise^2 sigma_t the drift is

    v - noise^2 / 2 E[x0 | x],

finite up to t = 1 (no division by sigma_t), and the noise vanishes at the data.
``noise = 0`` is the ODE.  :func:`euler_maruyama` integrates it from t = 0 to 1.
The paths a score can be had from are the rows of :data:`SCHEDULES`; the constant-
width and bridge paths have noise the velocity does not see, and are refused.
"""
import math

import numpy as np

from fmnumpy.errors import FmnumpyError
from fmnumpy.euclidean.paths import COSINE, STRAIGHT


def straight_schedule(t, sigma_min):
    """(alpha, sigma, alpha', sigma') of xt = (1 - (1 - sigma_min) t) x0 + t x1."""
    return t, 1.0 - (1.0 - sigma_min) * t, 1.0, -(1.0 - sigma_min)


def cosine_schedule(t, _):
    """(alpha, sigma, alpha', sigma') of xt = cos(pi t / 2) x0 + sin(pi t / 2) x1."""
    a = 0.5 * math.pi
    return math.sin(a * t), math.cos(a * t), a * math.cos(a * t), -a * math.sin(a * t)


# path code -> its (alpha, sigma, alpha', sigma') at t; the paths the score comes from v
SCHEDULES = {STRAIGHT: straight_schedule, COSINE: cosine_schedule}


def noise_estimate(v, x, t, path, param):
    """E[x0 | xt = x] (N, D) from the velocity v (N, D) at the scalar time t."""
    a, s, da, ds = SCHEDULES[path](t, param)
    return (a * v - da * x) / (a * ds - da * s)


def score_from_velocity(v, x, t, path, param):
    """grad log p_t(x) (N, D) = -E[x0 | x] / sigma_t (module docstring), t < 1."""
    return -noise_estimate(v, x, t, path, param) / SCHEDULES[path](t, param)[1]


def check_noise(noise):
    """``noise`` as a float if finite and >= 0, else one line."""
    g = float(noise) if np.isscalar(noise) else math.nan
    if not (math.isfinite(g) and g >= 0.0):
        raise FmnumpyError(f"noise must be a finite number >= 0 (0 is the ODE), got {noise!r}")
    return g


def euler_maruyama(field, x0, steps, noise, rng, path, param):
    """Integrate dx = [v - noise^2 / 2 E[x0 | x]] dt + noise sqrt(sigma_t) dW from
    t = 0 to 1 in ``steps`` equal steps: x (N, D) float64.  ``field(x, t)`` is the
    velocity (N, D) at the scalar time t; one evaluation per step."""
    x = np.array(x0, dtype=np.float64)
    h = 1.0 / steps
    for n in range(steps):
        t = n * h
        v = np.asarray(field(x, t), dtype=np.float64)
        drift = v - 0.5 * noise * noise * noise_estimate(v, x, t, path, param)
        g = noise * math.sqrt(SCHEDULES[path](t, param)[1])
        x += h * drift
        if g > 0.0:
            x += g * math.sqrt(h) * rng.standard_normal(x.shape)
    return x
