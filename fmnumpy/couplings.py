"""Couplings: how the prior samples x0 are paired with the data x1 of a batch
before the path is built (``docs/couplings.md``).

Dimension letters: B batch, D data dimension.

Every coupling has the signature ``coupling(x0, x1, rng) -> (x0, x1)`` with
x0, x1 (B, D) and ``rng`` a ``numpy.random.Generator``, which is what
``train.BatchStream`` calls once per batch.  ``exact_ot`` also offers
``exact_ot.chunk`` (= ``exact_ot_chunk``): the same on K stacked batches
(K, B, D) at once, spread over Numba's threads.

- ``independent``: the pairs as drawn, pi = p0 x p1 (Lipman et al. 2023).
- ``exact_ot``: minibatch optimal transport (Tong et al. 2024, "Improving and
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
  path ``schedules.sb_path`` (Tong et al. 2024, SB-CFM).
"""
import functools
import math

import numpy as np
from numba import njit, prange

from .assignment import lapjv_into
from .errors import FmnumpyError
from .metrics import sq_dists_into


# ---- independent ----------------------------------------------------------------------

def independent(x0, x1, rng=None):
    """The identity coupling: (x0, x1) unchanged."""
    return x0, x1


# ---- exact minibatch OT ---------------------------------------------------------------

@njit(cache=True)
def ot_assignment(x0, x1, C, perm, y, v):
    """perm (B,) int64 such that pairing x1[i] with x0[perm[i]] minimises
    sum_i ||x0[perm[i]] - x1[i]||^2.  C (B, B) float64, y (B,) int64 and
    v (B,) float64 are caller-owned workspace.

    The rows of the cost are the data points and the columns the prior
    samples: C_ij = ||x1_i - x0_j||^2.  (Both orientations are optimal; on
    the 2-D toy sets this one needed up to 2x less search in the solver.)
    """
    sq_dists_into(x1, x0, C)
    lapjv_into(C, perm, y, v)


class _Workspace:
    """Buffers of ``exact_ot`` for one batch size, kept between calls."""

    def __init__(self, B):
        self.C = np.empty((B, B), dtype=np.float64)
        self.y = np.empty(B, dtype=np.int64)
        self.v = np.empty(B, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def _workspace(B):
    return _Workspace(B)


def exact_ot(x0, x1, rng=None):
    """Minibatch OT coupling: (x0[perm], x1) with perm the optimal assignment
    for the squared Euclidean cost, x0, x1 (B, D).  Deterministic (``rng`` is
    unused); ties between equally good assignments are broken by the solver."""
    x0, x1 = _check_batch(x0, x1)
    B = x0.shape[0]
    if B == 0:
        return x0, x1
    ws = _workspace(B)
    perm = np.empty(B, dtype=np.int64)
    ot_assignment(x0, x1, ws.C, perm, ws.y, ws.v)
    return x0[perm], x1


@njit(cache=True, parallel=True)
def _ot_chunk(x0, x1, perm):
    """perm[c] = the OT assignment of batch c, x0, x1 (K, B, D), perm (K, B);
    the K batches are independent and run on Numba's threads."""
    K, B = perm.shape
    for c in prange(K):
        C = np.empty((B, B))
        y = np.empty(B, dtype=np.int64)
        v = np.empty(B)
        ot_assignment(x0[c], x1[c], C, perm[c], y, v)


def exact_ot_chunk(x0, x1, rng=None):
    """``exact_ot`` on K stacked batches at once: x0, x1 (K, B, D) ->
    (x0 re-paired batch by batch, x1).  Same result as calling ``exact_ot`` on
    each batch, with the batches spread over Numba's threads (set by
    ``numba.set_num_threads``, e.g. ``FlowMatcher(threads=...)``); meant for
    ``train.BatchStream``, which draws ``DATA_CHUNK_STEPS`` batches at a time.
    Do not call it while BLAS runs its own threads (DEVELOPERS.md)."""
    x0, x1 = np.asarray(x0), np.asarray(x1)
    if x0.ndim != 3 or x0.shape != x1.shape:
        raise FmnumpyError(f"exact_ot_chunk needs x0 and x1 of one shape (K, B, D), got "
                           f"{x0.shape} and {x1.shape}")
    x0 = np.ascontiguousarray(x0 if x0.dtype in (np.float32, np.float64) else x0.astype(float))
    x1 = np.ascontiguousarray(x1 if x1.dtype in (np.float32, np.float64) else x1.astype(float))
    K, B, _ = x0.shape
    perm = np.empty((K, B), dtype=np.int64)
    if B:
        _ot_chunk(x0, x1, perm)
    return np.take_along_axis(x0, perm[:, :, None], axis=1), x1


# A coupling may offer a whole-chunk version as ``.chunk(x0, x1, rng)`` on
# (K, B, D) arrays, with the same result as K per-batch calls.
exact_ot.chunk = exact_ot_chunk


# ---- entropic OT (Sinkhorn) -----------------------------------------------------------

# Terms of a log-sum-exp more than this far below its largest term are
# skipped: with at most 10^4 terms they change the sum by < 1e-22 relative,
# far below float64 rounding.  For a small reg most of the plan is such
# terms, and skipping them saves most of the exponentials.
_LSE_SKIP = -60.0
_FAST = {"nnan", "nsz"}     # lets the max-reductions vectorise; no result changes


@njit(cache=True, fastmath=_FAST)
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


@njit(cache=True, fastmath=_FAST)
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
    x0, x1 = _check_pair_any(x0, x1)
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
    x0, x1 = _check_batch(x0, x1)
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


# ---- input checks ---------------------------------------------------------------------

def _check_pair_any(x0, x1):
    x0, x1 = np.asarray(x0), np.asarray(x1)
    if x0.ndim != 2 or x1.ndim != 2 or x0.shape[1] != x1.shape[1]:
        raise FmnumpyError(f"a coupling needs x0 (B, D) and x1 (B, D), got {x0.shape} and "
                           f"{x1.shape}")
    if x0.dtype not in (np.float32, np.float64):
        x0 = x0.astype(np.float64)
    if x1.dtype not in (np.float32, np.float64):
        x1 = x1.astype(np.float64)
    return np.ascontiguousarray(x0), np.ascontiguousarray(x1)


def _check_batch(x0, x1):
    x0, x1 = _check_pair_any(x0, x1)
    if x0.shape[0] != x1.shape[0]:
        raise FmnumpyError(f"a coupling needs equally many x0 and x1, got {x0.shape[0]} and "
                           f"{x1.shape[0]}")
    return x0, x1
