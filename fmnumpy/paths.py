"""Probability paths: where a training pair (x0, x1) sits at time t, and the
velocity the network must learn there.

Dimension letters: B batch, D data dimension.

Convention (the one used everywhere in fmnumpy): x0 ~ N(0, I) is the prior
sample at t = 0, x1 is the data sample at t = 1, and sampling integrates
dx/dt = v(x, t) from t = 0 to t = 1.

With Lipman et al. (2023), eq. 20-23, the conditional OT path with minimum
width sigma_min is

    xt = (1 - (1 - sigma_min) t) x0 + t x1,     ut = x1 - (1 - sigma_min) x0,

which for sigma_min = 0 is the straight line xt = (1 - t) x0 + t x1 with
ut = x1 - x0.  See ``docs/flow_matching.md``.

The other paths a model can be trained on, the variance-preserving cosine path
and the Schrodinger bridge, are written in ``schedules.py``
(``docs/couplings.md#paths``).  Compiled code selects a path by an integer
code (``PATHS``), as it selects an activation, through :func:`fill_path`.
"""
from numba import njit

from .errors import FmnumpyError, positive_finite
from .schedules import cosine_path, sb_path

STRAIGHT, COSINE, SB = 0, 1, 2
PATHS = {"straight": STRAIGHT, "cosine": COSINE, "sb": SB}
SB_SIGMA = 1.0        # default bridge noise, TorchCFM's SchrodingerBridgeConditionalFlowMatcher


def path_code(name):
    """Integer code of a path name; a clear error lists the valid names."""
    key = str(name).lower()
    if key not in PATHS:
        raise FmnumpyError(f"unknown path {name!r}; choose one of: " + ", ".join(PATHS))
    return PATHS[key]


def time_from_uniform(u, power):
    """The training time t = 1 - (1 - u)^power of a uniform draw u in [0, 1).

    t then has the Beta(1, 1/power) density p(t) = (1 - t)^(1/power - 1) / power:
    power = 1 is uniform, power > 1 puts more of the batch near the data (t = 1).
    Drawing t from p(t) weights the loss by p(t) at each t, which leaves its
    minimiser, E[ut | xt], unchanged (docs/flow_matching.md#time-sampling).
    Scalar math, so the same function serves NumPy arrays and the GPU kernels.
    """
    return 1.0 - (1.0 - u) ** power


def check_time_power(power):
    """``power`` as a float if it is usable by :func:`time_from_uniform` (finite, > 0)."""
    return positive_finite("time_power", power, " (1 draws t uniformly)")


def check_sb_sigma(sigma):
    """``sigma`` as a float if it is a usable bridge noise (finite, > 0), else FmnumpyError."""
    return positive_finite("sb_sigma", sigma, " (the Schrodinger-bridge noise)")


@njit(cache=True)
def straight_path(x0, x1, t, sigma_min, xt, ut):
    """Fill xt and ut (B, D) for the (sigma_min) straight path above.

    x0, x1 (B, D), t (B,).  The path has no trainable parameters, so there is
    no backward.
    """
    B, D = x0.shape
    s = 1.0 - sigma_min
    for i in range(B):
        ti = t[i]
        for d in range(D):
            xt[i, d] = (1.0 - s * ti) * x0[i, d] + ti * x1[i, d]
            ut[i, d] = x1[i, d] - s * x0[i, d]


@njit(cache=True)
def fill_path(path, x0, x1, t, sigma, eps, xt, ut):
    """Fill xt and ut = d xt / dt (B, D) on the path with code ``path``.

    x0, x1 (B, D), t (B,).  ``sigma`` is the path's one parameter: sigma_min
    of the straight path, the bridge noise of ``sb``; the cosine path has none
    and ignores it.  eps (B, D) ~ N(0, I) is the bridge's noise, read by
    ``sb`` only (the other paths take an empty (0, D) array).
    """
    if path == COSINE:
        cosine_path(x0, x1, t, sigma, xt, ut)
    elif path == SB:
        if eps.shape[0] != x0.shape[0] or eps.shape[1] != x0.shape[1]:
            raise ValueError("the sb path needs noise eps of the batch's shape (B, D)")
        sb_path(x0, x1, t, sigma, eps, xt, ut)
    else:
        straight_path(x0, x1, t, sigma, xt, ut)
