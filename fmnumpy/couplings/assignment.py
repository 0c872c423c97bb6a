"""Optimal assignment (the linear sum assignment problem), written by hand.

Given a square cost matrix C (N, N), find the permutation pi minimising
sum_i C[i, pi(i)].  Used by the exact W2 metric (``metrics.w2``) and the exact
minibatch-OT coupling (``couplings.exact_ot``).  See ``docs/couplings.md``,
"The Jonker-Volgenant algorithm".

Dimension letters: N rows = columns.

The algorithm is the dense shortest augmenting path method of Jonker &
Volgenant (1987), "A shortest augmenting path algorithm for dense and sparse
linear assignment problems".  It works on the linear-programming dual

    max sum_i u_i + sum_j v_j   subject to   u_i + v_j <= C_ij  for all i, j,

keeps the column potentials v (N,) and a partial assignment x (row -> column),
y (column -> row, -1 if free), and maintains two invariants:

  (I1) dual feasibility: with u_i := min_j (C_ij - v_j) every reduced cost
       C_ij - u_i - v_j is >= 0 (true by the definition of u);
  (I2) complementary slackness on the assigned pairs: an assigned row i
       reaches its minimum at its own column, C[i, x_i] - v[x_i] = u_i.

A full assignment satisfying (I1) and (I2) is optimal: its cost
sum_i C[i, x_i] = sum_i u_i + sum_j v_j equals a feasible dual objective,
which bounds every assignment's cost from below (LP duality).  Two phases:

  1. column reduction against a guess u0 (N,) of the row potentials:
     v_j = min_i (C_ij - u0_i), and column j is offered to a row i attaining
     it.  For that row C_ik - v_k >= u0_i for every k, with equality at j, so
     (I2) holds whatever u0 is.  A row offered several columns keeps one; the
     other columns and rows stay free.  u0 = 0 is the classical start; a guess
     close to the optimal potentials (``couplings.sliced_potential`` for
     point clouds) leaves v nearly optimal and phase 2 short;
  2. augmentation: for each free row, Dijkstra on the reduced costs finds the
     shortest alternating path to a free column, of length mind; every column
     settled on the way at distance d_j < mind gets v_j += d_j - mind, which
     keeps (I1) and makes every edge of the path tight, and the assignment is
     flipped along the path (one more row assigned, (I2) kept).

Phase 2 is O(N^2) per free row, O(N^3) in all in the worst case; its cost is
N operations per settled column, so the number of settled columns is what a
better guess u0 saves.  In floating point the invariants hold up to rounding,
so the result is optimal up to a few ulps of the total cost.

Speed notes.  The loops over a row are written so that LLVM turns them into
SIMD code: minima go through ``fmin`` (LLVM's ``minnum``; Numba's ``min``
is a compare-and-select that LLVM does not vectorise as a reduction), the
argmin is an integer-min reduction over keys, and the Dijkstra relaxation does
not record predecessors (the path is rebuilt afterwards, see
``_shortest_path``).  The only fast-math freedoms taken are "no NaNs" and "no
signed zeros", which change no arithmetic result (the costs are checked to be
finite; +inf appears only as a sentinel).  The compiled entry point
``lapjv_into`` allocates nothing: the caller passes the work buffers.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from fmnumpy.errors import FmnumpyError

_FAST = {"nnan", "nsz"}


def _llvm_binary(name, doc):
    """A float64 function of two float64 arguments compiled to the LLVM
    intrinsic ``name``."""
    def typer(typingctx, a, b):
        sig = types.float64(types.float64, types.float64)

        def codegen(context, builder, signature, args):
            f64 = ir.DoubleType()
            fn = cgutils.get_or_insert_function(builder.module,
                                                ir.FunctionType(f64, [f64, f64]), name)
            return builder.call(fn, args)

        return sig, codegen

    typer.__doc__ = doc
    return intrinsic(typer)


fmin = _llvm_binary("llvm.minnum.f64", """min(a, b) of two float64 as LLVM's ``minnum``.

    Equal to ``min(a, b)`` for numbers (it may differ only for NaN and for the
    sign of a zero result).  LLVM recognises ``m = fmin(m, w[k])`` in a loop
    as a min-reduction and vectorises it, which it does not do for the
    compare-and-select that Numba emits for ``min``: about 8x faster on rows
    of 256.""")
fmax = _llvm_binary("llvm.maxnum.f64", "max(a, b) of two float64, the twin of ``fmin``.")


# ---- work buffers -----------------------------------------------------------------------

def work_sizes(N):
    """Lengths of the float64 and int32 work buffers ``lapjv_into`` needs for N."""
    return 4 * N + 1, 4 * N + 1


@njit(cache=True)
def _views(N, fwork, iwork):
    """Named views of the work buffers (see ``_shortest_path`` for their roles):
    dw, vw, d (N,) and hs (N + 1,) float64; key, settled, place (N,) and
    rows (N + 1,) int32."""
    dw = fwork[:N]
    vw = fwork[N:2 * N]
    d = fwork[2 * N:3 * N]
    hs = fwork[3 * N:4 * N + 1]
    key = iwork[:N]
    settled = iwork[N:2 * N]
    place = iwork[2 * N:3 * N]
    rows = iwork[3 * N:4 * N + 1]
    return dw, vw, d, hs, key, settled, place, rows


@njit(cache=True)
def key_view(N, iwork):
    """The view ``key`` of the int work buffer (see ``_views``)."""
    return iwork[:N]


# ---- phase 1 ----------------------------------------------------------------------------

@njit(cache=True)
def start_reduction(v, y):
    """Phase 1, before the rows: v = +inf, y = 0."""
    for j in range(v.shape[0]):
        v[j] = np.inf
        y[j] = 0


@njit(cache=True, fastmath=_FAST)
def reduce_row(Ci, i, ui, y, v):
    """Phase 1, row i with cost row Ci (N,) and guess ui: where
    C_ij - u0_i < v_j, set v_j to it and y_j = i (so y_j ends as the first row
    attaining the minimum).  Vectorised with masked stores; a caller that
    computes the costs row by row (``couplings.ot_assignment``) reduces each
    row while it is still in cache."""
    for j in range(Ci.shape[0]):
        c = Ci[j] - ui
        if c < v[j]:
            v[j] = c
            y[j] = i


@njit(cache=True)
def offer_columns(x, y, key):
    """Phase 1, after the rows: column j goes to its row y_j; a row offered
    several columns keeps the highest-numbered one and the others become free
    (y_j = -1).  Fills key (N,): j for a free column, j + N for an assigned
    one (what the searches' argmin sorts by, so that among equally near
    columns a free one wins)."""
    N = x.shape[0]
    for i in range(N):
        x[i] = -1
    for j in range(N - 1, -1, -1):
        i = y[j]
        if x[i] < 0:
            x[i] = j
            key[j] = j + N
        else:
            y[j] = -1
            key[j] = j


# ---- phase 2 ----------------------------------------------------------------------------

@njit(cache=True, fastmath=_FAST)
def _shortest_path(C, start, x, y, v, key, work):
    """Phase 2 for the free row ``start``: Dijkstra over the reduced costs
    C_ij - v_j until the nearest free column, then the flip and the
    potential update.  work = (dw, vw, d, hs, settled, place, rows), below.

    Columns are the Dijkstra nodes.  Settling column j at distance d_j scans
    its row i = y_j with the tree offset h = C_ij - v_j - d_j: the relaxed
    distance of column k is C_ik - v_k - h, which is >= d_j by (I2).
    dw (N,) holds the tentative distances, +inf once settled; vw (N,) is v for
    the open columns and -inf for the settled ones, so that a relaxation
    C_ik - vw_k - h = +inf never reopens a settled column and the loop has no
    branch; d (N,) the final distances of the settled columns, in the order
    ``settled`` (N,), place[j] the position of j in it; rows (N + 1,) and
    hs (N + 1,) the scanned rows and their offsets, ``start`` first with
    h = 0 (rows[t + 1] is the row of settled[t]).

    No predecessor is stored during the scans.  The flip walks back from the
    free column: column j may be reached from any row scanned before j was
    settled (rows[0..place[j]]) whose relaxation gives exactly j's final
    distance, since that edge is then tight; the row that did set it is one,
    and recomputing C_ik - v_k - h repeats the same operations on the same
    numbers, so the equality is exact.  The walk tries the latest such rows
    first (a column usually gets its distance from a recent scan), and the
    positions strictly decrease along it, so it ends at ``start``.
    """
    dw, vw, d, hs, settled, place, rows = work
    N = C.shape[0]
    big = np.int32(2 * N)
    mind = np.inf
    for j in range(N):
        vw[j] = v[j]
        dw[j] = C[start, j] - v[j]
        mind = fmin(mind, dw[j])
    rows[0] = start
    hs[0] = 0.0
    n = 0                                           # columns settled so far
    while True:
        # the first column at distance mind, a free one if any is (key order)
        kmin = big
        for k in range(N):
            kmin = min(kmin, key[k] if dw[k] == mind else big)
        if kmin < N:
            break
        j = kmin - N
        d[j] = mind
        dw[j] = np.inf
        vw[j] = -np.inf
        settled[n] = j
        place[j] = n
        i = y[j]
        h = C[i, j] - v[j] - mind
        n += 1
        rows[n] = i
        hs[n] = h
        mind = np.inf
        for k in range(N):                          # relax row i, vectorised
            dk = fmin(dw[k], C[i, k] - vw[k] - h)
            dw[k] = dk
            mind = fmin(mind, dk)
    end = kmin
    # flip the assignment along the path, from the free column back to start
    j = end
    dist = mind
    r = n
    while True:
        while C[rows[r], j] - v[j] - hs[r] != dist:
            r -= 1
            if r < 0:                               # cannot happen: see above
                raise ArithmeticError("assignment: no predecessor reproduces a distance")
        i = rows[r]
        y[j] = i
        k = x[i]
        x[i] = j
        if i == start:
            break
        j = k
        dist = d[j]
        r = place[j]
    # potential update keeping (I1), (I2): the settled columns were reached
    # before the path length mind
    for t in range(n):
        j = settled[t]
        v[j] += d[j] - mind
    key[end] = end + N


@njit(cache=True)
def augment_into(C, x, y, v, fwork, iwork):
    """Phase 2 after phase 1: augment from every free row until x is a full
    optimal assignment (an augmentation never frees a row, so one pass over
    the rows finds them all)."""
    N = C.shape[0]
    dw, vw, d, hs, key, settled, place, rows = _views(N, fwork, iwork)
    for i in range(N):
        if x[i] < 0:
            _shortest_path(C, i, x, y, v, key, (dw, vw, d, hs, settled, place, rows))


@njit(cache=True)
def lapjv_into(C, u0, x, y, v, fwork, iwork):
    """Fill x (N,) row -> column, y (N,) column -> row and the column
    potentials v (N,) with an optimal assignment of C (N, N) float64 (finite,
    C-contiguous; not checked here, see ``linear_assignment``).  u0 (N,) is
    any finite guess of the optimal row potentials, of the size of the costs
    (zeros if none); it changes the speed, never the optimal cost (up to the
    rounding of C_ij - u0_i).  fwork float64 and iwork int32 are work
    buffers of the lengths ``work_sizes(N)``.  The compiled entry point for
    other kernels; it allocates nothing."""
    N = C.shape[0]
    start_reduction(v, y)
    for i in range(N):
        reduce_row(C[i], i, u0[i], y, v)
    offer_columns(x, y, key_view(N, iwork))
    augment_into(C, x, y, v, fwork, iwork)


@njit(cache=True)
def row_potentials(C, x, v, u):
    """u_i = C[i, x_i] - v[x_i] (N,): the row duals implied by (I2)."""
    for i in range(C.shape[0]):
        u[i] = C[i, x[i]] - v[x[i]]


# ---- Python entry points ----------------------------------------------------------------

def _as_cost(C):
    C = np.ascontiguousarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise FmnumpyError(f"an assignment needs a square (N, N) cost matrix, got shape "
                           f"{C.shape}")
    if not np.isfinite(C).all():
        raise FmnumpyError("an assignment needs a finite cost matrix (no inf or nan)")
    return C


def _as_guess(u0, N):
    if u0 is None:
        return np.zeros(N)
    u0 = np.ascontiguousarray(u0, dtype=np.float64)
    if u0.shape != (N,) or not np.isfinite(u0).all():
        raise FmnumpyError(f"the row-potential guess u0 must be {N} finite numbers, got "
                           f"shape {u0.shape}")
    return u0


def _solve(C, u0):
    N = C.shape[0]
    x = np.empty(N, dtype=np.int64)
    y = np.empty(N, dtype=np.int32)
    v = np.empty(N, dtype=np.float64)
    if N:
        nf, ni = work_sizes(N)
        lapjv_into(C, u0, x, y, v, np.empty(nf), np.empty(ni, dtype=np.int32))
    return x, v


def lapjv(C, u0=None):
    """Optimal assignment with its dual certificate.

    C (N, N) finite costs; u0 (N,) an optional guess of the row potentials,
    of the size of the costs (speed only; see ``lapjv_into``).  Returns
    (cols, u, v): cols (N,) int64 with row i assigned to column cols[i], and
    potentials u (N,), v (N,) float64 with u_i + v_j <= C_ij for all i, j and
    equality at (i, cols[i]).
    """
    C = _as_cost(C)
    x, v = _solve(C, _as_guess(u0, C.shape[0]))
    u = np.empty(C.shape[0], dtype=np.float64)
    if C.shape[0]:
        row_potentials(C, x, v, u)
    return x, u, v


def linear_assignment(C, u0=None):
    """Columns pi (N,) int64 of an optimal assignment of the rows of C (N, N):
    sum_i C[i, pi[i]] is minimal over all permutations.  See ``lapjv``."""
    C = _as_cost(C)
    return _solve(C, _as_guess(u0, C.shape[0]))[0]
