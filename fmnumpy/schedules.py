"""Probability paths beyond the straight line (``docs/couplings.md#paths``).
Same convention as ``paths.py``: x0 ~ N(0, I) at t = 0, data x1 at t = 1, and
each function fills xt (B, D) and its time derivative ut = d xt / dt (B, D),
the regression target of the conditional flow-matching loss.  Training selects
them by name (``FlowMatcher(path="cosine" | "sb")``, ``fmnumpy train --path``)
through ``paths.fill_path``.

Dimension letters: B batch, D data dimension.

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

Neither path has trainable parameters, so there is no backward.
"""
import math

from numba import njit

SB_DENOM_EPS = 1e-8     # TorchCFM's guard in (1 - 2t) / (2 t (1 - t) + 1e-8)


@njit(cache=True)
def cosine_path(x0, x1, t, sigma_min, xt, ut):
    """Fill xt, ut (B, D) for the variance-preserving cosine path above.

    x0, x1 (B, D), t (B,).  ``sigma_min`` is accepted so the signature matches
    ``paths.straight_path`` and is ignored: this path has no minimum width.
    """
    B, D = x0.shape
    half_pi = 0.5 * math.pi
    for i in range(B):
        c = math.cos(half_pi * t[i])
        s = math.sin(half_pi * t[i])
        for d in range(D):
            xt[i, d] = c * x0[i, d] + s * x1[i, d]
            ut[i, d] = half_pi * (c * x1[i, d] - s * x0[i, d])


@njit(cache=True)
def sb_path(x0, x1, t, sigma, eps, xt, ut):
    """Fill xt, ut (B, D) for the Schrodinger-bridge path above.

    x0, x1, eps (B, D), t (B,), sigma > 0 the bridge's noise level.
    """
    B, D = x0.shape
    for i in range(B):
        ti = t[i]
        a = 1.0 - ti
        st = sigma * math.sqrt(ti * a)                     # s_t
        dst = (1.0 - 2.0 * ti) * st / (2.0 * ti * a + SB_DENOM_EPS)   # s_t' (guarded)
        for d in range(D):
            xt[i, d] = a * x0[i, d] + ti * x1[i, d] + st * eps[i, d]
            ut[i, d] = x1[i, d] - x0[i, d] + dst * eps[i, d]
