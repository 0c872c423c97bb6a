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

The other paths a model can be trained on (``docs/couplings.md#paths``):

- ``cosine_path``: the variance-preserving trigonometric interpolant
  (Albergo & Vanden-Eijnden 2023, "Building normalizing flows with stochastic
  interpolants"; TorchCFM's ``VariancePreservingConditionalFlowMatcher``)

      xt = cos(pi t / 2) x0 + sin(pi t / 2) x1,
      ut = pi / 2 (cos(pi t / 2) x1 - sin(pi t / 2) x0).

  alpha_t^2 + sigma_t^2 = 1, so for independent unit-variance x0 and x1 the
  variance of xt stays 1 along the path.

- ``sb_path``: the Brownian-bridge path of Schrodinger-bridge CFM (Tong et al.
  2024, "Improving and generalizing flow-based generative models with
  minibatch optimal transport", eq. 20-21; TorchCFM's
  ``SchrodingerBridgeConditionalFlowMatcher``), with eps ~ N(0, I):

      mu_t = (1 - t) x0 + t x1,   s_t = sigma sqrt(t (1 - t)),
      xt   = mu_t + s_t eps,
      ut   = (1 - 2t) / (2 t (1 - t)) (xt - mu_t) + x1 - x0
           = x1 - x0 + s_t' eps,   s_t' = sigma (1 - 2t) / (2 sqrt(t (1 - t))).

  For fixed (x0, x1, eps) this ut is exactly d xt / dt.  As in TorchCFM the
  denominator carries ``SB_DENOM_EPS`` (so t = 0 or 1 gives ut = x1 - x0
  instead of a division by zero).  The path is meant to be paired with the
  entropic OT coupling of regularisation 2 sigma^2:
  ``couplings.get_coupling("sinkhorn", reg=2 * sigma**2)`` (TorchCFM's
  current default is the exact plan instead, ``ot_method="exact"``).

- ``gaussian_path``: the straight path widened by a constant sigma, the path of
  TorchCFM's I-CFM and OT-CFM (Tong et al. 2024, eq. 14-15), with eps ~ N(0, I):

      xt = (1 - t) x0 + t x1 + sigma eps,     ut = x1 - x0.

  Its width is sigma at every t, where Lipman's sigma_min path narrows from 1 at
  t = 0 to sigma_min at t = 1 (docs/couplings.md#paths).

No path has trainable parameters, so there is no backward.  Compiled code
selects a path by an integer code (``PATHS``), as it selects an activation,
through :func:`fill_path`.  The straight path's per-coordinate formula,
:func:`path_element`, is the one the GPU kernel compiles too.
"""
import math

from numba import njit

from fmnumpy.errors import FmnumpyError, positive_finite

STRAIGHT, COSINE, SB, GAUSS = 0, 1, 2, 3
PATHS = {"straight": STRAIGHT, "cosine": COSINE, "sb": SB}
# GAUSS is the straight path widened by a constant sigma (``FlowMatcher(sigma=...)``);
# it has no name of its own: the straight path with sigma > 0 selects it
NOISY = (SB, GAUSS)       # the paths that read the noise eps
SB_SIGMA = 1.0        # default bridge noise, TorchCFM's SchrodingerBridgeConditionalFlowMatcher
SB_DENOM_EPS = 1e-8     # TorchCFM's guard in (1 - 2t) / (2 t (1 - t) + 1e-8)


def path_code(name):
    """Integer code of a path name; a clear error lists the valid names."""
    key = str(name).lower()
    if key not in PATHS:
        raise FmnumpyError(f"unknown path {name!r}; choose one of: " + ", ".join(PATHS))
    return PATHS[key]


def check_sb_sigma(sigma):
    """``sigma`` as a float if it is a usable bridge noise (finite, > 0), else FmnumpyError."""
    return positive_finite("sb_sigma", sigma, " (the Schrodinger-bridge noise)")


def path_element(x0, x1, t, sigma_min):
    """(xt, ut) of one coordinate on the straight path (Lipman et al. 2023, eq.
    20-23): xt = (1 - (1 - sigma_min) t) x0 + t x1, ut = x1 - (1 - sigma_min) x0."""
    s = 1.0 - sigma_min
    return (1.0 - s * t) * x0 + t * x1, x1 - s * x0


path_element_cpu = njit(cache=True, inline="always")(path_element)


@njit(cache=True)
def straight_path(x0, x1, t, sigma_min, xt, ut):
    """Fill xt and ut (B, D) for the (sigma_min) straight path above.

    x0, x1 (B, D), t (B,).
    """
    B, D = x0.shape
    for i in range(B):
        ti = t[i]
        for d in range(D):
            xt[i, d], ut[i, d] = path_element_cpu(x0[i, d], x1[i, d], ti, sigma_min)


def gaussian_element(x0, x1, t, sigma, eps):
    """(xt, ut) of one coordinate on the constant-sigma path:
    xt = (1 - t) x0 + t x1 + sigma eps, ut = x1 - x0."""
    return (1.0 - t) * x0 + t * x1 + sigma * eps, x1 - x0


gaussian_element_cpu = njit(cache=True, inline="always")(gaussian_element)


@njit(cache=True)
def gaussian_path(x0, x1, t, sigma, eps, xt, ut):
    """Fill xt, ut (B, D) for the constant-sigma path above; eps (B, D)."""
    B, D = x0.shape
    for i in range(B):
        ti = t[i]
        for d in range(D):
            xt[i, d], ut[i, d] = gaussian_element_cpu(x0[i, d], x1[i, d], ti, sigma, eps[i, d])


def cosine_element(x0, x1, t):
    """(xt, ut) of one coordinate on the variance-preserving cosine path:
    xt = cos(pi t / 2) x0 + sin(pi t / 2) x1, ut = pi / 2 (cos(pi t / 2) x1 - sin(pi t / 2) x0)."""
    half_pi = 0.5 * math.pi
    c = math.cos(half_pi * t)
    s = math.sin(half_pi * t)
    return c * x0 + s * x1, half_pi * (c * x1 - s * x0)


cosine_element_cpu = njit(cache=True, inline="always")(cosine_element)


@njit(cache=True)
def cosine_path(x0, x1, t, sigma_min, xt, ut):
    """Fill xt, ut (B, D) for the variance-preserving cosine path above.

    x0, x1 (B, D), t (B,).  ``sigma_min`` is accepted so the signature matches
    ``paths.straight_path`` and is ignored: this path has no minimum width.
    """
    B, D = x0.shape
    for i in range(B):
        for d in range(D):
            xt[i, d], ut[i, d] = cosine_element_cpu(x0[i, d], x1[i, d], t[i])


def sb_element(x0, x1, t, sigma, eps):
    """(xt, ut) of one coordinate on the Schrodinger-bridge path with noise eps:
    xt = (1 - t) x0 + t x1 + s_t eps, ut = x1 - x0 + s_t' eps, with
    s_t = sigma sqrt(t (1 - t)) and s_t' = (1 - 2t) s_t / (2 t (1 - t) + SB_DENOM_EPS)."""
    a = 1.0 - t
    st = sigma * math.sqrt(t * a)                                 # s_t
    dst = (1.0 - 2.0 * t) * st / (2.0 * t * a + SB_DENOM_EPS)     # s_t' (guarded)
    return a * x0 + t * x1 + st * eps, x1 - x0 + dst * eps


sb_element_cpu = njit(cache=True, inline="always")(sb_element)


@njit(cache=True)
def sb_path(x0, x1, t, sigma, eps, xt, ut):
    """Fill xt, ut (B, D) for the Schrodinger-bridge path above.

    x0, x1, eps (B, D), t (B,), sigma > 0 the bridge's noise level.
    """
    B, D = x0.shape
    for i in range(B):
        for d in range(D):
            xt[i, d], ut[i, d] = sb_element_cpu(x0[i, d], x1[i, d], t[i], sigma, eps[i, d])


@njit(cache=True)
def fill_path(path, x0, x1, t, sigma, eps, xt, ut):
    """Fill xt and ut = d xt / dt (B, D) on the path with code ``path``.

    x0, x1 (B, D), t (B,).  ``sigma`` is the path's one parameter: sigma_min
    of the straight path, the bridge noise of ``sb``, the constant width of
    ``GAUSS``; the cosine path has none and ignores it.  eps (B, D) ~ N(0, I) is
    the noise of ``sb`` and ``GAUSS`` (the other paths take an empty (0, D) array).
    """
    if path == COSINE:
        cosine_path(x0, x1, t, sigma, xt, ut)
    elif path == SB or path == GAUSS:
        if eps.shape[0] != x0.shape[0] or eps.shape[1] != x0.shape[1]:
            raise ValueError("the sb and sigma paths need noise eps of the batch's shape (B, D)")
        if path == SB:
            sb_path(x0, x1, t, sigma, eps, xt, ut)
        else:
            gaussian_path(x0, x1, t, sigma, eps, xt, ut)
    else:
        straight_path(x0, x1, t, sigma, xt, ut)
