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

  1. column reduction: v_j = min_i C_ij, each column offered to its cheapest
     row; a row that got exactly one column lowers that column's potential so
     the column stays its strict favourite (reduction transfer);
  2. augmenting row reduction (twice): a free row takes its cheapest column
     j1, lowering v[j1] by the gap to its second-cheapest (v2 - v1) so the
     pair stays tight; the row previously there becomes free again.  This
     auction-like phase assigns most rows cheaply;
  3. augmentation: for each remaining free row, a Dijkstra shortest path on
     the reduced costs from the row to a free column; the potentials of the
     columns settled before the path's length are raised by
     (their distance - path length), which keeps (I1) and (I2), and the
     assignment is flipped along the path (one more row assigned).

Phase 3 alone is O(N^3) worst case; phases 1-2 usually leave few free rows.
"""
import numpy as np
from numba import njit

_BIG = np.inf


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
    # last and is not "unique"
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
    """Phase 2: one pass of augmenting row reduction over the free rows.
    Returns the number of rows still free (written back to ``free_rows``)."""
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
        if rr_cnt < current * N and rr_cnt < budget:
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


@njit(cache=True)
def _shortest_path(C, start, y, v, d, cols, pred):
    """Phase 3 search: Dijkstra from row ``start`` on reduced costs
    C_ij - v_j over the alternating graph, until a free column is reached.

    cols is a permutation of the columns split as [ready | scan | todo]:
    ready = settled at a distance < the current minimum, scan = at the current
    minimum distance, todo = the rest.  d (N,) distances, pred (N,) the row
    each column was reached from.  Updates v for the ready columns and returns
    the free column that ends the path.
    """
    N = C.shape[0]
    for j in range(N):
        cols[j] = j
        pred[j] = start
        d[j] = C[start, j] - v[j]
    lo = 0
    hi = 0
    n_ready = 0
    final_j = -1
    while final_j == -1:
        if lo == hi:
            # move every todo column at the minimum distance into the scan list
            n_ready = lo
            hi = lo + 1
            j = cols[lo]
            mind = d[j]
            for k in range(hi, N):
                j = cols[k]
                dj = d[j]
                if dj <= mind:
                    if dj < mind:
                        hi = lo
                        mind = dj
                    cols[k] = cols[hi]
                    cols[hi] = j
                    hi += 1
            for k in range(lo, hi):
                j = cols[k]
                if y[j] < 0:
                    final_j = j
        if final_j == -1:
            # scan: relax the todo columns through the row assigned to each
            # scan column
            while lo != hi and final_j == -1:
                j = cols[lo]
                lo += 1
                i = y[j]
                mind = d[j]
                h = C[i, j] - v[j] - mind       # -(u_i) relative to the tree
                for k in range(hi, N):
                    j = cols[k]
                    cred = C[i, j] - v[j] - h
                    if cred < d[j]:
                        d[j] = cred
                        pred[j] = i
                        if cred == mind:
                            if y[j] < 0:
                                final_j = j
                                break
                            cols[k] = cols[hi]
                            cols[hi] = j
                            hi += 1
            if final_j != -1:
                lo -= 1                         # cols[lo] still has d == mind
    mind = d[cols[lo]]
    # potential update keeping (I1), (I2): the ready columns were reached
    # before the path length mind
    for k in range(n_ready):
        j = cols[k]
        v[j] += d[j] - mind
    return final_j


@njit(cache=True)
def _lapjv(C, x, y, v, passes=2, mult=1000000000):
    """Fill x (N,) row -> column, y (N,) column -> row and the column
    potentials v (N,) with an optimal assignment of C (N, N) float64."""
    N = C.shape[0]
    if N == 1:
        x[0] = 0
        y[0] = 0
        v[0] = C[0, 0]
        return
    free_rows = np.empty(N, dtype=np.int64)
    n_free = _column_reduction(C, x, y, v, free_rows)
    for _ in range(passes):
        if n_free == 0:
            break
        n_free = _augmenting_row_reduction(C, n_free, free_rows, x, y, v, mult * n_free)
    d = np.empty(N, dtype=np.float64)
    cols = np.empty(N, dtype=np.int64)
    pred = np.empty(N, dtype=np.int64)
    for f in range(n_free):
        start = free_rows[f]
        j = _shortest_path(C, start, y, v, d, cols, pred)
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
        raise ValueError(f"linear_assignment needs a square (N, N) cost matrix, got {C.shape}")
    if not np.isfinite(C).all():
        raise ValueError("linear_assignment needs a finite cost matrix")
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
        _lapjv(C, x, y, v)
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
        _lapjv(C, x, y, v)
    return x
