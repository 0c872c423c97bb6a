"""Couplings: how the prior samples x0 are paired with the data x1 of a batch
before the path is built (``docs/couplings.md``).

Dimension letters: B batch, D data dimension.

Every coupling has the signature ``coupling(x0, x1, rng) -> (x0, x1)`` with
x0, x1 (B, D) and ``rng`` a ``numpy.random.Generator``, which is what
``train.BatchStream`` calls once per batch.  ``exact_ot`` also offers
``exact_ot.chunk`` (= ``exact_ot_chunk``): the same on K stacked batches
(K, B, D) at once, spread over Numba's threads.

- ``independent``: the pairs as drawn, pi = p0 x p1 (Lipman et al. 2023).
- ``exact_ot`` (``ot.py``): minibatch optimal transport (Tong et al. 2024, "Improving and
  generalizing flow-based generative models with minibatch optimal
  transport", OT-CFM; Pooladian et al. 2023): x0 is permuted by the
  assignment minimising sum_i ||x0_pi(i) - x1_i||^2.  The result is a
  permutation: every x0 and x1 appears exactly once.  (TorchCFM instead
  draws B pairs from the plan with replacement; for an exact plan between
  equal-size batches the two agree in distribution of a single pair, but
  ours never repeats or drops a point.)
- ``sinkhorn``: the entropic OT plan (log-domain Sinkhorn), then B pairs
  (i, j) drawn from it with replacement, as TorchCFM's ``OTPlanSampler``
  does.  With reg = 2 sigma^2 it is the coupling of the Schrodinger-bridge
  path ``paths.sb_path`` (Tong et al. 2024, SB-CFM).
"""
import functools
import math

import numpy as np
from numba import njit

from fmnumpy.couplings.distances import sq_dists_into
from fmnumpy.errors import FmnumpyError
from fmnumpy.couplings.ot import (FAST, check_batch, check_pair_any, exact_ot,
    exact_ot_chunk)  # noqa: F401


# ---- independent ----------------------------------------------------------------------

def independent(x0, x1, rng=None):
    """The identity coupling: (x0, x1) unchanged."""
    return x0, x1


# ---- entropic OT (Sinkhorn) -----------------------------------------------------------

# Terms of a log-sum-exp more than this far below its largest term are
# skipped: with at most 10^4 terms they change the sum by < 1e-22 relative,
# far below float64 rounding.  For a small reg most of the plan is such
# terms, and skipping them saves most of the exponentials.
_LSE_SKIP = -60.0


@njit(cache=True, fastmath=FAST)
def _lse_rows(C, g, reg, f, log_a):
    """f_i = reg log a - reg log sum_j exp((g_j - C_ij) / reg)  (N,)."""
    N, M = C.shape
    inv = 1.0 / reg
    for i in range(N):
        m = -np.inf
        for j in range(M):
            m = max(m, g[j] - C[i, j])
        s = 0.0
        for j in range(M):
            z = (g[j] - C[i, j] - m) * inv
            if z > _LSE_SKIP:
                s += math.exp(z)
        f[i] = reg * log_a - (m + reg * math.log(s))


@njit(cache=True, fastmath=FAST)
def _lse_cols(C, f, reg, g, log_b, colmax, colsum):
    """g_j = reg log b - reg log sum_i exp((f_i - C_ij) / reg)  (M,), in two
    row-major passes (max, then sum of exponentials).  Returns the L1 error
    of the column marginals of the plan *before* this update,
    sum_j |b exp((g_j - g_j_new) / reg) - b|."""
    N, M = C.shape
    inv = 1.0 / reg
    for j in range(M):
        colmax[j] = -np.inf
        colsum[j] = 0.0
    for i in range(N):
        for j in range(M):
            colmax[j] = max(colmax[j], f[i] - C[i, j])
    for i in range(N):
        for j in range(M):
            z = (f[i] - C[i, j] - colmax[j]) * inv
            if z > _LSE_SKIP:
                colsum[j] += math.exp(z)
    b = math.exp(log_b)
    err = 0.0
    for j in range(M):
        gnew = reg * log_b - (colmax[j] + reg * math.log(colsum[j]))
        err += abs(b * math.exp((g[j] - gnew) * inv) - b)
        g[j] = gnew
    return err


@njit(cache=True)
def sinkhorn_potentials(C, reg, n_iter, tol, f, g):
    """Log-domain Sinkhorn for uniform marginals a = 1/N, b = 1/M on the cost
    C (N, M): alternately

        f_i = reg log a - reg LSE_j((g_j - C_ij) / reg)     (rows sum to a)
        g_j = reg log b - reg LSE_i((f_i - C_ij) / reg)     (columns sum to b)

    from g = 0, until the column marginals (before the g update) are within
    ``tol`` in L1 or ``n_iter`` iterations are done.  Fills f (N,), g (M,);
    the plan is P_ij = exp((f_i + g_j - C_ij) / reg), whose columns sum to
    b exactly.  Returns the number of iterations run."""
    N, M = C.shape
    log_a = -math.log(N)
    log_b = -math.log(M)
    colmax = np.empty(M)
    colsum = np.empty(M)
    for j in range(M):
        g[j] = 0.0
    it = 0
    while it < n_iter:
        it += 1
        _lse_rows(C, g, reg, f, log_a)
        err = _lse_cols(C, f, reg, g, log_b, colmax, colsum)
        if err < tol:
            break
    return it


def sinkhorn_plan(x0, x1, reg=0.05, n_iter=200, tol=1e-4):
    """The entropic OT plan P (B0, B1) between the uniform measures on x0
    (B0, D) and x1 (B1, D) for the cost C_ij = ||x0_i - x1_j||^2:

        P = argmin <P, C> + reg sum_ij P_ij (log P_ij - 1),   P 1 = a, P^T 1 = b.

    ``reg`` is in the units of the cost (squared distances), not relative to
    it, as in TorchCFM (``normalize_cost=False``).  Returns (P, iterations)."""
    x0, x1 = check_pair_any(x0, x1)
    if x0.shape[0] == 0 or x1.shape[0] == 0:
        raise FmnumpyError("a Sinkhorn plan needs at least one point on each side")
    reg = float(reg)
    if not reg > 0.0 or not math.isfinite(reg):
        raise FmnumpyError(f"the Sinkhorn regularisation must be positive, got {reg}")
    if int(n_iter) != n_iter or n_iter < 1:
        raise FmnumpyError(f"the Sinkhorn iteration count must be a positive integer, "
                           f"got {n_iter!r}")
    C = np.empty((x0.shape[0], x1.shape[0]), dtype=np.float64)
    sq_dists_into(x0, x1, C)
    f = np.empty(x0.shape[0])
    g = np.empty(x1.shape[0])
    it = sinkhorn_potentials(C, reg, int(n_iter), float(tol), f, g)
    P = np.exp((f[:, None] + g[None, :] - C) / reg)
    return P, it


def sinkhorn(x0, x1, rng, reg=0.05, n_iter=200, tol=1e-4):
    """Entropic minibatch OT coupling: B index pairs (i, j) drawn with
    replacement from the Sinkhorn plan P (``sinkhorn_plan``), returning
    (x0[i], x1[j]).  As in TorchCFM's ``OTPlanSampler.sample_plan``, a pair
    is drawn from the whole plan, so some points repeat and others are
    dropped.  Draws B uniforms from ``rng``."""
    x0, x1 = check_batch(x0, x1)
    B = x0.shape[0]
    if B == 0:
        return x0, x1
    P, _ = sinkhorn_plan(x0, x1, reg, n_iter, tol)
    cdf = np.cumsum(P.ravel())
    k = np.searchsorted(cdf, rng.random(B) * cdf[-1], side="right")
    k = np.minimum(k, cdf.size - 1)
    i, j = np.divmod(k, B)
    return x0[i], x1[j]


# ---- registry -------------------------------------------------------------------------

COUPLINGS = {
    "independent": independent,
    "ot": exact_ot,             # the short name: exact minibatch OT
    "exact_ot": exact_ot,
    "sinkhorn": sinkhorn,
}


def get_coupling(name, **options):
    """The coupling called ``name`` (see ``COUPLINGS``), with keyword
    ``options`` bound (e.g. ``get_coupling("sinkhorn", reg=2 * sigma**2)``)."""
    if name not in COUPLINGS:
        raise FmnumpyError(f"unknown coupling {name!r}; choose one of: "
                           + ", ".join(COUPLINGS))
    fn = COUPLINGS[name]
    if not options:
        return fn
    import inspect
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("x0", "x1", "rng")]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise FmnumpyError(f"coupling {name!r} takes no option {', '.join(bad)}; its options: "
                           + (", ".join(allowed) or "none"))
    return functools.partial(fn, **options)
