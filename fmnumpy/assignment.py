"""Optimal assignment (the linear sum assignment problem), written by hand.

Given a square cost matrix C (N, N), find the permutation pi minimising
sum_i C[i, pi(i)].  Used by the exact W2 metric (``metrics.w2``) and the exact
minibatch-OT coupling (``couplings.exact_ot``).  See ``docs/couplings.md``,
"The Jonker-Volgenant algorithm".

Dimension letters: N rows = columns.

The algorithm is Jonker & Volgenant (1987), "A shortest augmenting path
algorithm for dense and sparse linear assignment problems", in its dense form
(LAPJV).  It works on the linear-programming dual

    max sum_i u_i + sum_j v_j   subject to   u_i + v_j <= C_ij  for all i, j,

keeps the column potentials v (N,) and a partial assignment x (row -> column),
y (column -> row, -1 if free), and maintains two invariants:

  (I1) dual feasibility: with u_i := min_j (C_ij - v_j) every reduced cost
       C_ij - u_i - v_j is >= 0;
  (I2) complementary slackness on the assigned pairs: for an assigned row i,
       C[i, x_i] - v[x_i] = u_i, i.e. the reduced cost of every assigned pair
       is 0.

A full assignment satisfying (I1) and (I2) is optimal: its cost
sum_i C[i, x_i] = sum_i u_i + sum_j v_j equals a feasible dual objective,
which bounds every assignment's cost from below (LP duality).  The phases:

  1. column reduction: v_j = min_i C_ij and each column is offered to its
     cheapest row; a row that got exactly one column lowers that column's
     potential by its second-smallest reduced cost (reduction transfer), so
     the pair stays tight (I2) with room to spare;
  2. augmenting row reduction (a bounded auction): a free row i takes its
     cheapest column j1 and lowers v[j1] by the gap v2 - v1 to its
     second-cheapest reduced cost, so row i is tight at j1 (I2); the row that
     held j1 becomes free and is tried next;
  3. augmentation: for each remaining free row, Dijkstra on the reduced
     costs finds the shortest alternating path to a free column, of length
     mind; every column settled on the way at distance d_j < mind gets
     v_j += d_j - mind, which keeps (I1) and makes every edge of the path
     tight, and the assignment is flipped along the path (one more row
     assigned, (I2) kept).

Phase 3 is O(N^2) per free row, O(N^3) in all in the worst case; phases 1-2
cost O(N^2) and usually leave a fraction of the rows free.  In floating point
the invariants hold up to rounding, so the result is optimal up to a few ulps
of the total cost.
"""
import numpy as np
from numba import njit

from .errors import FmnumpyError

_BIG = np.inf
# Phase 2 work limits: passes, and row reductions per free row in a pass.
# Unlimited augmenting row reduction wages long "price wars" on geometric
# costs (squared distances between point clouds); a short run keeps most of
# its benefit on random costs.
ARR_PASSES = 1
ARR_BUDGET = 2
# The Dijkstra passes work on blocks of this many columns, and the only
# fast-math freedoms taken are "no NaNs" and "no signed zeros", which let
# min-reductions vectorise and change no arithmetic result (the costs are
# checked to be finite; +inf appears only as a sentinel).
BLOCK = 16
_FAST = {"nnan", "nsz"}


@njit(cache=True)
def _column_reduction(C, x, y, v, free_rows):
    """Phase 1: column reduction and reduction transfer.  Returns the number
    of free rows written to ``free_rows``."""
    N = C.shape[0]
    for j in range(N):
        v[j] = _BIG
        y[j] = -1
    for i in range(N):
        x[i] = -1
        for j in range(N):
            c = C[i, j]
            if c < v[j]:
                v[j] = c
                y[j] = i
    # offer each column to its cheapest row; a row offered several keeps the
    # first (highest-numbered) one and is not "unique"
    unique = np.ones(N, dtype=np.bool_)
    for j in range(N - 1, -1, -1):
        i = y[j]
        if x[i] < 0:
            x[i] = j
        else:
            unique[i] = False
            y[j] = -1
    n_free = 0
    for i in range(N):
        if x[i] < 0:
            free_rows[n_free] = i
            n_free += 1
        elif unique[i]:
            # reduction transfer: v[j] -= min over other columns of C_ij - v_j,
            # so that row i's reduced cost at j equals its minimum (I2)
            j = x[i]
            m = _BIG
            for j2 in range(N):
                if j2 != j:
                    c = C[i, j2] - v[j2]
                    if c < m:
                        m = c
            v[j] -= m
    return n_free


@njit(cache=True)
def _augmenting_row_reduction(C, n_free, free_rows, x, y, v, budget):
    """Phase 2: one pass of augmenting row reduction over the free rows,
    at most ``budget`` reductions.  Returns the number of rows still free
    (written back to ``free_rows``)."""
    N = C.shape[0]
    current = 0
    new_free = 0
    rr_cnt = 0
    while current < n_free:
        rr_cnt += 1
        i = free_rows[current]
        current += 1
        # cheapest (v1 at j1) and second cheapest (v2 at j2) reduced cost of row i
        j1 = 0
        v1 = C[i, 0] - v[0]
        j2 = -1
        v2 = _BIG
        for j in range(1, N):
            c = C[i, j] - v[j]
            if c < v2:
                if c >= v1:
                    v2 = c
                    j2 = j
                else:
                    v2 = v1
                    v1 = c
                    j2 = j1
                    j1 = j
        i0 = y[j1]
        v1_new = v[j1] - (v2 - v1)
        lowers = v1_new < v[j1]
        if rr_cnt < current * N and rr_cnt < budget:    # bounded work (LAPJV + ARR_BUDGET)
            if lowers:
                v[j1] = v1_new        # row i now tight at j1 and j2 (tie)
            elif i0 >= 0 and j2 >= 0:
                j1 = j2               # tie: take the other cheapest column
                i0 = y[j2]
            if i0 >= 0:
                if lowers:
                    current -= 1      # the displaced row is tried again at once
                    free_rows[current] = i0
                else:
                    free_rows[new_free] = i0
                    new_free += 1
        elif i0 >= 0:
            free_rows[new_free] = i0
            new_free += 1
        x[i] = j1
        y[j1] = i
    return new_free


@njit(cache=True, fastmath=_FAST)
def _block_minima(dw, bmin):
    """bmin[b] = min of dw[b*BLOCK : (b+1)*BLOCK]; returns the overall minimum.
    Fixed-width inner loops let the compiler vectorise the reduction."""
    nb = bmin.shape[0]
    mind = np.inf
    for b in range(nb):
        m = np.inf
        for t in range(BLOCK):
            m = min(m, dw[b * BLOCK + t])
        bmin[b] = m
        mind = min(mind, m)
    return mind


@njit(cache=True, fastmath=_FAST)
def _argmin_column(dw, bmin, mind, y):
    """A column j with dw[j] == mind, preferring a free one (y[j] < 0) among
    ties, found through the block minima."""
    jmin = -1
    for b in range(bmin.shape[0]):
        if bmin[b] == mind:
            for j in range(b * BLOCK, (b + 1) * BLOCK):
                if dw[j] == mind:
                    if y[j] < 0:
                        return j
                    if jmin < 0:
                        jmin = j
    return jmin


@njit(cache=True, fastmath=_FAST)
def _shortest_path(C, start, y, v, d, dw, vw, bmin, pred, settled):
    """Phase 3 search: Dijkstra from row ``start`` over the reduced costs
    C_ij - v_j, until the nearest free column is reached.

    Columns are the Dijkstra nodes.  Settling column j at distance d_j scans
    its row i = y_j: with the tree offset h = C_ij - v_j - d_j the relaxed
    distance of column k is C_ik - v_k - h, which is >= d_j by (I2).
    dw (Np,) holds the tentative distances, +inf for settled columns and for
    the padding up to Np = a multiple of BLOCK; vw (N,) is v for the open
    columns and -inf for the settled ones, so a relaxation
    C_ik - vw_k - h = +inf never reopens a settled column; d (N,) the final
    distances; pred (N,) the row each column was reached from; settled (N,)
    the settled columns in order.  Every pass runs over a contiguous row of
    C without branches the compiler cannot turn into vector selects.
    Updates v for the settled columns and returns the free column that ends
    the path.
    """
    N = C.shape[0]
    for j in range(N):
        vw[j] = v[j]
        dw[j] = C[start, j] - v[j]
        pred[j] = start
    n_settled = 0
    while True:
        mind = _block_minima(dw, bmin)
        jmin = _argmin_column(dw, bmin, mind, y)
        if y[jmin] < 0:
            break
        d[jmin] = mind
        dw[jmin] = np.inf
        vw[jmin] = -np.inf
        settled[n_settled] = jmin
        n_settled += 1
        i = y[jmin]
        h = C[i, jmin] - v[jmin] - mind
        for k in range(N):
            cred = C[i, k] - vw[k] - h
            if cred < dw[k]:
                dw[k] = cred
                pred[k] = i
    # potential update keeping (I1), (I2): the settled columns were reached
    # before the path length mind
    for k in range(n_settled):
        j = settled[k]
        v[j] += d[j] - mind
    return jmin


@njit(cache=True)
def lapjv_into(C, x, y, v):
    """Fill x (N,) row -> column, y (N,) column -> row and the column
    potentials v (N,) with an optimal assignment of C (N, N) float64 (finite,
    C-contiguous; not checked here, see ``linear_assignment``).  The compiled
    entry point for other kernels; x, y, v are the caller's buffers."""
    N = C.shape[0]
    if N == 1:
        x[0] = 0
        y[0] = 0
        v[0] = C[0, 0]
        return
    free_rows = np.empty(N, dtype=np.int64)
    n_free = _column_reduction(C, x, y, v, free_rows)
    for _ in range(ARR_PASSES):
        if n_free == 0:
            break
        n_free = _augmenting_row_reduction(C, n_free, free_rows, x, y, v, ARR_BUDGET * n_free)
    nb = (N + BLOCK - 1) // BLOCK
    dw = np.full(nb * BLOCK, np.inf)
    bmin = np.empty(nb, dtype=np.float64)
    d = np.empty(N, dtype=np.float64)
    vw = np.empty(N, dtype=np.float64)
    pred = np.empty(N, dtype=np.int64)
    settled = np.empty(N, dtype=np.int64)
    for f in range(n_free):
        start = free_rows[f]
        j = _shortest_path(C, start, y, v, d, dw, vw, bmin, pred, settled)
        # flip the assignment along the path back to the start row
        i = -1
        while i != start:
            i = pred[j]
            y[j] = i
            k = j
            j = x[i]
            x[i] = k


@njit(cache=True)
def row_potentials(C, x, v, u):
    """u_i = C[i, x_i] - v[x_i] (N,): the row duals implied by (I2)."""
    for i in range(C.shape[0]):
        u[i] = C[i, x[i]] - v[x[i]]


def _as_cost(C):
    C = np.ascontiguousarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise FmnumpyError(f"an assignment needs a square (N, N) cost matrix, got shape "
                           f"{C.shape}")
    if not np.isfinite(C).all():
        raise FmnumpyError("an assignment needs a finite cost matrix (no inf or nan)")
    return C


def lapjv(C):
    """Optimal assignment with its dual certificate.

    C (N, N) finite costs.  Returns (cols, u, v): cols (N,) int64 with row i
    assigned to column cols[i], and potentials u (N,), v (N,) float64 with
    u_i + v_j <= C_ij for all i, j and equality at (i, cols[i]).
    """
    C = _as_cost(C)
    N = C.shape[0]
    x = np.empty(N, dtype=np.int64)
    y = np.empty(N, dtype=np.int64)
    v = np.empty(N, dtype=np.float64)
    u = np.empty(N, dtype=np.float64)
    if N:
        lapjv_into(C, x, y, v)
        row_potentials(C, x, v, u)
    return x, u, v


def linear_assignment(C):
    """Columns pi (N,) int64 of an optimal assignment of the rows of C (N, N):
    sum_i C[i, pi[i]] is minimal over all permutations.  See ``lapjv``."""
    C = _as_cost(C)
    N = C.shape[0]
    x = np.empty(N, dtype=np.int64)
    if N:
        y = np.empty(N, dtype=np.int64)
        v = np.empty(N, dtype=np.float64)
        lapjv_into(C, x, y, v)
    return x
