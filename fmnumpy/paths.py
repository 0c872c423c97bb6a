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
"""
from numba import njit


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
