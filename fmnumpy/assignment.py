"""Optimal assignment (the linear sum assignment problem).

Given a square cost matrix C (N, N), find the permutation pi minimising
sum_i C[i, pi(i)].  Used by the exact W2 metric and the exact OT coupling.
"""
import numpy as np


def linear_assignment(C):
    """Columns pi (N,) of an optimal assignment of the rows of C (N, N)."""
    from scipy.optimize import linear_sum_assignment
    rows, cols = linear_sum_assignment(np.asarray(C, dtype=np.float64))
    out = np.empty(C.shape[0], dtype=np.int64)
    out[rows] = cols
    return out
