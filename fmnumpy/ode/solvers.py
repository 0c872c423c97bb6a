"""ODE solvers for dx/dt = v(x, t), t from 0 (noise) to 1 (data).

Dimension letters: B particles, D data dimension, S stages.

An explicit Runge-Kutta method is data: a Butcher tableau (c, A, b) written as
exact fractions, and one stepping loop, :func:`rk_integrate`, serves them all
(``docs/solvers.md``).  With step h and stages

    k_i = v(x + h sum_{j<i} a_ij k_j,  t + c_i h),     x <- x + h sum_i b_i k_i.

The velocity field is passed to the compiled loop as a compiled function
``field(params, x, t, out)`` so that the same loop integrates the network
(:func:`mlp_field`) and the closed-form fields of the tests.  The loop's other
arguments come as tuples:

    grid = (t0, t1, steps)       ``steps`` equal steps from t0 to t1
    tab  = (c, A, b)             the tableau's arrays (S,), (S, S), (S,)
    work = (K, xs, ts)           stage buffers (S, B, D), (B, D), (B,)
    out  = (traj, rec)           recorded states (R + 1, B, D) at step counts rec (R + 1,)
"""
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction as Fr

import numba
import numpy as np
from numba import njit

from fmnumpy.errors import FmnumpyError
from fmnumpy.threads import single_threaded_blas


class Tableau:
    """Butcher tableau of an explicit RK method with S stages and order p."""

    def __init__(self, name, order, c, A, b):
        S = len(b)
        self.name, self.order, self.stages = name, order, S
        self.c_exact = tuple(Fr(x) for x in c)
        self.b_exact = tuple(Fr(x) for x in b)
        self.A_exact = tuple(tuple(Fr(x) for x in row) for row in A)
        self.c = np.array([float(x) for x in self.c_exact])
        self.b = np.array([float(x) for x in self.b_exact])
        self.A = np.zeros((S, S))
        for i, row in enumerate(self.A_exact):
            self.A[i, :len(row)] = [float(x) for x in row]


TABLEAUS = {
    "euler": Tableau("euler", 1, c=[0], A=[[]], b=[1]),
    "midpoint": Tableau("midpoint", 2, c=[0, Fr(1, 2)], A=[[], [Fr(1, 2)]], b=[0, 1]),
    "heun": Tableau("heun", 2, c=[0, 1], A=[[], [1]], b=[Fr(1, 2), Fr(1, 2)]),
    # the classical Runge-Kutta method (not the 3/8 rule)
    "rk4": Tableau("rk4", 4, c=[0, Fr(1, 2), Fr(1, 2), 1],
                   A=[[], [Fr(1, 2)], [0, Fr(1, 2)], [0, 0, 1]],
                   b=[Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6)]),
}
METHODS = tuple(TABLEAUS)


def tableau(method):
    key = str(method).lower()
    if key not in TABLEAUS:
        raise FmnumpyError(f"unknown method {method!r}; choose one of: " + ", ".join(METHODS))
    return TABLEAUS[key]


@njit(cache=True)
def rk_stage_input(x, K, A, i, h, xs):
    """xs = x + h sum_{j<i} a_ij k_j, the input of stage i.  x, xs (B, D), K (S, B, D)."""
    B, D = x.shape
    for p in range(B):
        for d in range(D):
            acc = x[p, d]
            for j in range(i):
                acc += h * A[i, j] * K[j, p, d]
            xs[p, d] = acc


@njit(cache=True)
def rk_combine(x, K, b, h):
    """x <- x + h sum_i b_i k_i, the step update."""
    B, D = x.shape
    for p in range(B):
        for d in range(D):
            acc = 0.0
            for i in range(b.shape[0]):
                acc += b[i] * K[i, p, d]
            x[p, d] += h * acc


@njit(cache=True)
def rk_record(traj, x, n, rec):
    """After step n (0-based) store x in every row r of traj with rec[r] == n + 1
    (rec (R,) ascending step counts; rec[0] = 0 is the initial state)."""
    for r in range(1, rec.shape[0]):
        if rec[r] == n + 1:
            traj[r] = x


def check_steps(steps):
    """A fixed-step solve's step count as an int (truncated), at least 1, else one
    FmnumpyError line."""
    steps = int(steps)
    if steps < 1:
        raise FmnumpyError(f"steps must be a positive integer, got {steps}")
    return steps


def record_steps(steps, record):
    """Step counts of R + 1 evenly spread trajectory rows: round(r steps / R),
    r = 0..R (R = min(record, steps)), so the last row is the final state."""
    R = min(int(record), int(steps))
    return np.round(np.arange(R + 1) * (steps / R)).astype(np.int64)


@njit(cache=False, nogil=True)   # takes a compiled function argument: Numba cannot cache it
def rk_integrate(field, params, x, grid, tab, work, out):
    """Integrate x (B, D) in place over ``grid`` with the tableau ``tab`` for any
    compiled ``field(params, x, t, out)`` (the tuples: module docstring).

    If traj has rows, traj[0] = x(t0) and traj[r] = x after rec[r] steps.
    """
    t0, t1, steps = grid
    c, A, b = tab
    K, xs, ts = work
    traj, rec = out
    h = (t1 - t0) / steps
    if traj.shape[0] > 0:
        traj[0] = x
    for n in range(steps):
        for i in range(b.shape[0]):
            rk_stage_input(x, K, A, i, h, xs)
            ts[:] = t0 + n * h + c[i] * h
            field(params, xs, ts, K[i])
        rk_combine(x, K, b, h)
        rk_record(traj, x, n, rec)


def balanced_chunk(N, chunk, threads):
    """Particles per chunk, at most ``chunk``, such that the chunks come in a whole
    number of rounds of ``threads`` (prange gives each thread an equal share of the
    chunks): 10,000 particles at most 2,048 a chunk on 2 threads make 6 chunks of
    1,667, not 5 of 2,048 (3 on one thread, 2 on the other)."""
    threads = max(1, int(threads))
    rounds = max(1, -(-N // (threads * max(1, chunk))))
    return max(1, -(-N // (rounds * threads)))


def solve_in_chunks(N, chunk, solve):
    """[solve(lo, hi) for each chunk] of the particles [0, N), the chunks at most
    ``chunk`` long (:func:`balanced_chunk`) and solved on Numba's number of threads:
    ``solve`` must release the GIL (a ``nogil`` compiled solver); BLAS is
    single-threaded meanwhile, as in the samplers (DEVELOPERS.md, Threads)."""
    threads = numba.get_num_threads()
    size = balanced_chunk(N, max(int(chunk), 1), threads)
    starts = range(0, N, size)
    blas = single_threaded_blas()
    try:
        if threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(lambda lo: solve(lo, min(N, lo + size)), starts))
        return [solve(lo, min(N, lo + size)) for lo in starts]
    finally:
        blas.restore_original_limits()


