"""Exact minibatch optimal transport: the assignment of a batch of prior samples
x0 to the data x1 that minimises sum_i ||x0_pi(i) - x1_i||^2 (``docs/couplings.md``),
solved by the hand-written Jonker-Volgenant of ``assignment.py`` started from a
sliced-projection guess of the dual potentials.  ``couplings.py`` offers it as the
``ot`` coupling; ``metrics.w2`` uses its guess.

Dimension letters: B batch, D data dimension, K stacked batches.

The input checks of every coupling live here too (``check_batch``,
``check_pair_any``, ``check_finite_cost``).
"""
import threading

import numba
import numpy as np
from numba import njit, prange

from fmnumpy.couplings.assignment import (augment_into, fmax, fmin, key_view, offer_columns,
    reduce_row, start_reduction, work_sizes)
from fmnumpy.errors import FmnumpyError


# ---- exact minibatch OT ---------------------------------------------------------------

FAST = {"nnan", "nsz"}     # lets reductions vectorise; changes no result

# The sliced potential projects on the D axes and, up to this dimension, also on
# the D (D - 1) diagonals (e_p +- e_q) / sqrt 2: 4 directions in 2-D, 2 sorts each.
SLICED_MAX_DIM = 4


@njit(cache=True, fastmath=FAST)
def _argsort_into(p, order, bucket, count):
    """order (B,) = the indices that sort p (B,) ascending, ties in index order:
    a counting sort into B equal-width buckets between min p and max p, then an
    insertion sort, which has little left to do.  bucket (B,) and
    count (B + 1,) are work."""
    B = p.shape[0]
    lo, hi = np.inf, -np.inf
    for i in range(B):
        lo = fmin(lo, p[i])
        hi = fmax(hi, p[i])
    scale = B / (hi - lo) if hi > lo else 0.0
    if not scale < np.inf:                          # a subnormal spread
        scale = 0.0
    for i in range(B):
        bucket[i] = min(np.int32((p[i] - lo) * scale), np.int32(B - 1))
    count[:] = 0
    for i in range(B):
        count[bucket[i] + 1] += 1
    for b in range(B):
        count[b + 1] += count[b]
    for i in range(B):
        order[count[bucket[i]]] = i
        count[bucket[i]] += 1
    for t in range(1, B):
        o = order[t]
        q = t - 1
        while q >= 0 and p[order[q]] > p[o]:
            order[q + 1] = order[q]
            q -= 1
        order[q + 1] = o


@njit(cache=True)
def _direction(l, D):
    """Direction l of the sliced potential as (p, q, s): the axis e_p for l < D
    (q = p, s = 0), then the diagonals (e_p + s e_q) / sqrt 2, p < q, s = +-1."""
    if l < D:
        return l, l, 0.0
    l -= D
    s = 1.0 if l % 2 == 0 else -1.0
    l //= 2
    for p in range(D):
        if l < D - 1 - p:
            return p, p + 1 + l, s
        l -= D - 1 - p
    return 0, 0, 0.0


@njit(cache=True)
def sliced_potential(x1, x0T, u, center, proj, order, count):
    """A guess u (B,) of the optimal row potentials of the cost
    C_ij = ||x1_i - x0_j||^2, rows the data x1 (B, D), columns the prior x0
    given transposed, x0T (D, B); for ``assignment.lapjv_into``.  center (D,)
    and proj (2, B) float64, order (3, B) and count (B + 1,) int32 are work.

    ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, and for a convex psi
    Fenchel-Young gives psi(a) + psi*(b) >= a.b, so u(a) = ||a||^2 - 2 psi(a)
    and v(b) = ||b||^2 - 2 psi*(b) are feasible duals, tight on the pairs
    b = grad psi(a); the optimal psi is the Brenier potential of the transport
    from the data to the prior.  In 1-D that transport is monotone (the r-th
    smallest data point goes to the r-th smallest prior point) and psi is the
    integral of that step map, here by the trapezoid rule between
    consecutive sorted data points t_r with their partners s_r:

        psi(t_r) = sum_{q < r} (t_{q+1} - t_q) (s_q + s_{q+1}) / 2.

    The sliced guess averages such 1-D potentials of the projections on L
    directions theta_l with sum_l theta_l theta_l^T = (L / D) I,

        psi(a) = (D / L) sum_l psi_l(theta_l . a),

    the D axes and, for D <= SLICED_MAX_DIM, the diagonals (L = D^2).  Points
    are taken relative to the mean of x1 so that u is of the size of the
    costs.  Exact when the data are an affine image lambda x0 + c of the prior
    (lambda > 0), since the trapezoid rule integrates linear maps exactly.
    Any finite u gives the same optimal cost; on 2-D toy batches of 256
    against N(0, I) this one leaves the solver 2-5x fewer columns to settle
    than u = 0 (``docs/couplings.md``).  Costs 2 L sorts of B numbers.
    """
    B, D = x1.shape
    L = D * D if D <= SLICED_MAX_DIM else D
    w = 2.0 * D / L
    for k in range(D):
        center[k] = x1[:, k].sum() / B
    for i in range(B):
        sq = 0.0
        for k in range(D):
            sq += (x1[i, k] - center[k]) ** 2
        u[i] = sq
    t, s = proj[0], proj[1]                         # data and prior projections
    for l in range(L):
        p, q, sign = _direction(l, D)
        norm = 1.0 if sign == 0.0 else np.sqrt(0.5)
        for i in range(B):
            t[i] = ((x1[i, p] - center[p]) + sign * (x1[i, q] - center[q])) * norm
            s[i] = ((x0T[p, i] - center[p]) + sign * (x0T[q, i] - center[q])) * norm
        _argsort_into(t, order[0], order[2], count)
        _argsort_into(s, order[1], order[2], count)
        psi = 0.0                                   # psi_l at the r-th smallest t
        for r in range(1, B):
            prev, cur = order[0, r - 1], order[0, r]
            psi += (t[cur] - t[prev]) * 0.5 * (s[order[1, r - 1]] + s[order[1, r]])
            u[cur] -= w * psi


def sliced_guess(x1, x0):
    """``sliced_potential`` for Python callers: u (B,) float64 for the cost
    C_ij = ||x1_i - x0_j||^2 between equal-size point sets x1, x0 (B, D), to
    pass as ``assignment.linear_assignment(C, u0=u)``."""
    x0, x1 = check_batch(x0, x1)
    B, D = x1.shape
    u = np.empty(B)
    if B:
        fbuf, ibuf = _ot_work(B, D)
        _, _, _, x0T, center, proj, _, _, order, count, _ = _ot_views(B, D, fbuf, ibuf)
        x0T[:] = x0.T
        sliced_potential(x1, x0T, u, center, proj, order, count)
    return u


@njit(cache=True, fastmath=FAST)
def _sq_dist_row(x1, i, x0T, Ci):
    """Ci (B,) = ||x1_i - x0_j||^2 over j for D >= 2, summed over the
    coordinates in order like ``metrics.sq_dists_into`` (so exactly 0 for
    equal points), from x0 transposed, x0T (D, B), so that the loops over j
    run along contiguous rows and vectorise; the first two coordinates share
    one loop (2-D data is the common case).  1-D data: ``_sq_dist_row_1d``
    (a branch on D in here keeps LLVM from vectorising the loops)."""
    a, t = np.float64(x1[i, 0]), x0T[0]
    b, s = np.float64(x1[i, 1]), x0T[1]
    for j in range(Ci.shape[0]):
        Ci[j] = (a - t[j]) ** 2 + (b - s[j]) ** 2
    for k in range(2, x1.shape[1]):
        a, t = np.float64(x1[i, k]), x0T[k]
        for j in range(Ci.shape[0]):
            Ci[j] += (a - t[j]) ** 2


@njit(cache=True, fastmath=FAST)
def _sq_dist_row_1d(x1, i, x0T, Ci):
    """``_sq_dist_row`` for D = 1."""
    a, t = np.float64(x1[i, 0]), x0T[0]
    for j in range(Ci.shape[0]):
        Ci[j] = (a - t[j]) ** 2


def ot_work_sizes(B, D):
    """Lengths of the float64 and int32 work buffers of ``ot_assignment``
    (laid out by ``_ot_views``)."""
    nf, ni = work_sizes(B)
    floats = B * B + 2 * B + D * B + D + 2 * B      # C, v and u, x0T, center, proj
    ints = B + 3 * B + B + 1                         # y, order, count
    return floats + nf, ints + ni


@njit(cache=True)
def _ot_views(B, D, fbuf, ibuf):
    """Named views of the work buffers of ``ot_assignment``: C (B, B), v, u (B,),
    x0T (D, B), center (D,), proj (2, B), lapjv's float work; y (B,),
    order (3, B), count (B + 1,), lapjv's int work."""
    o = B * B
    C = fbuf[:o].reshape((B, B))
    v, u = fbuf[o:o + B], fbuf[o + B:o + 2 * B]
    o += 2 * B
    x0T = fbuf[o:o + D * B].reshape((D, B))
    o += D * B
    center = fbuf[o:o + D]
    proj = fbuf[o + D:o + D + 2 * B].reshape((2, B))
    lap_f = fbuf[o + D + 2 * B:]
    y = ibuf[:B]
    order = ibuf[B:4 * B].reshape((3, B))
    count = ibuf[4 * B:5 * B + 1]
    lap_i = ibuf[5 * B + 1:]
    return C, v, u, x0T, center, proj, lap_f, y, order, count, lap_i


@njit(cache=True)
def ot_assignment(x0, x1, perm, fbuf, ibuf):
    """perm (B,) int64 such that pairing x1[i] with x0[perm[i]] minimises
    sum_i ||x0[perm[i]] - x1[i]||^2, for x0, x1 (B, D).  fbuf float64 and
    ibuf int32 are work buffers of the lengths ``ot_work_sizes(B, D)``; no
    allocation.

    The rows of the cost are the data points and the columns the prior
    samples: C_ij = ||x1_i - x0_j||^2.  (Both orientations are optimal; from
    the sliced guess this one settles 1.1-1.5x fewer columns on 2spirals,
    checkerboard, moons and circles batches, 1.1-1.4x more on 8gaussians and
    pinwheel.)  The cost rows are made one at a time and reduced (phase 1 of
    ``assignment.lapjv_into``) while still in cache.
    """
    B, D = x1.shape
    C, v, u, x0T, center, proj, lap_f, y, order, count, lap_i = _ot_views(B, D, fbuf, ibuf)
    for j in range(B):
        for k in range(D):
            x0T[k, j] = x0[j, k]
    sliced_potential(x1, x0T, u, center, proj, order, count)
    start_reduction(v, y)
    for i in range(B):
        if D == 1:
            _sq_dist_row_1d(x1, i, x0T, C[i])
        else:
            _sq_dist_row(x1, i, x0T, C[i])
        reduce_row(C[i], i, u[i], y, v)
    offer_columns(perm, y, key_view(B, lap_i))
    augment_into(C, perm, y, v, lap_f, lap_i)


_local = threading.local()


def _ot_work(B, D, T=None):
    """Work buffers for ``ot_assignment``: one pair, or T pairs stacked (one per
    task of ``_ot_chunk``).  Kept between calls, per Python thread, for the
    last few shapes: fresh 0.5 MB buffers would cost page faults every call."""
    cache = _local.__dict__.setdefault("work", {})
    if (B, D, T) not in cache:
        if len(cache) >= 4:
            cache.clear()
        nf, ni = ot_work_sizes(B, D)
        shape = () if T is None else (T,)
        cache[B, D, T] = (np.empty(shape + (nf,)), np.empty(shape + (ni,), dtype=np.int32))
    return cache[B, D, T]


def exact_ot(x0, x1, rng=None):
    """Minibatch OT coupling: (x0[perm], x1) with perm the optimal assignment
    for the squared Euclidean cost, x0, x1 (B, D).  Deterministic (``rng`` is
    unused); ties between equally good assignments are broken by the solver."""
    x0, x1 = check_batch(x0, x1)
    check_finite_cost(x0, x1)
    B, D = x0.shape
    if B == 0:
        return x0, x1
    perm = np.empty(B, dtype=np.int64)
    ot_assignment(x0, x1, perm, *_ot_work(B, D))
    return x0[perm], x1


@njit(cache=True, parallel=True)
def _ot_chunk(x0, x1, perm, y0, fbufs, ibufs):
    """perm[c] = the OT assignment of batch c and y0[c] = x0[c][perm[c]], for
    x0, x1, y0 (K, B, D), perm (K, B).  The batches are independent; they are
    dealt out to T = len(fbufs) tasks on Numba's threads, each with its own
    work buffers fbufs[t], ibufs[t]."""
    K, B, D = x0.shape
    T = fbufs.shape[0]
    for t in prange(T):
        for c in range(t, K, T):
            ot_assignment(x0[c], x1[c], perm[c], fbufs[t], ibufs[t])
            for i in range(B):
                for k in range(D):
                    y0[c, i, k] = x0[c, perm[c, i], k]


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
    check_finite_cost(x0, x1)
    K, B, D = x0.shape
    perm = np.empty((K, B), dtype=np.int64)
    y0 = np.empty_like(x0)
    if B and K:
        _ot_chunk(x0, x1, perm, y0, *_ot_work(B, D, T=min(K, numba.get_num_threads())))
    return y0, x1


# A coupling may offer a whole-chunk version as ``.chunk(x0, x1, rng)`` on
# (K, B, D) arrays, with the same result as K per-batch calls.
exact_ot.chunk = exact_ot_chunk


# ---- input checks ---------------------------------------------------------------------

def check_pair_any(x0, x1):
    x0, x1 = np.asarray(x0), np.asarray(x1)
    if x0.ndim != 2 or x1.ndim != 2 or x0.shape[1] != x1.shape[1]:
        raise FmnumpyError(f"a coupling needs x0 (B, D) and x1 (B, D), got {x0.shape} and "
                           f"{x1.shape}")
    if x0.dtype not in (np.float32, np.float64):
        x0 = x0.astype(np.float64)
    if x1.dtype not in (np.float32, np.float64):
        x1 = x1.astype(np.float64)
    return np.ascontiguousarray(x0), np.ascontiguousarray(x1)


def check_finite_cost(x0, x1):
    """Exact OT needs finite squared distances: finite points below 1e150."""
    scale = float(np.max([np.abs(x0).max(initial=0), np.abs(x1).max(initial=0)]))  # NaN stays
    if not scale < 1e150:
        raise FmnumpyError("exact OT needs finite points of magnitude below 1e150, got "
                           f"{scale}")


def check_batch(x0, x1):
    x0, x1 = check_pair_any(x0, x1)
    if x0.shape[0] != x1.shape[0]:
        raise FmnumpyError(f"a coupling needs equally many x0 and x1, got {x0.shape[0]} and "
                           f"{x1.shape[0]}")
    return x0, x1
