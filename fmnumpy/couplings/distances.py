"""Pairwise squared Euclidean distances, the cost of W2, of the exact OT coupling's
checks and of the Sinkhorn plan.

Dimension letters: N, M points, D dimension.
"""
import numpy as np
from numba import njit

from fmnumpy.errors import FmnumpyError


@njit(cache=True)
def transpose(b):
    """b (M, D) -> bT (D, M) float64, so the loops over j read contiguously."""
    M, D = b.shape
    bT = np.empty((D, M))
    for j in range(M):
        for k in range(D):
            bT[k, j] = b[j, k]
    return bT


@njit(cache=True)
def sq_dist_row(a, i, bT, j0, out):
    """out[j] = ||a_i - b_j||^2 for j >= j0, summed over k in order."""
    D, M = bT.shape
    for j in range(j0, M):
        out[j] = 0.0
    for k in range(D):
        aik = np.float64(a[i, k])
        for j in range(j0, M):
            diff = aik - bT[k, j]
            out[j] += diff * diff


@njit(cache=True)
def sq_dists_into(a, b, C):
    """C_ij = ||a_i - b_j||^2 (N, M) float64 for a (N, D), b (M, D).

    Written as the sum of squared differences (not ||a||^2 + ||b||^2 - 2 a.b),
    so C_ij is exactly 0 when a_i == b_j and no entry is negative.
    """
    bT = transpose(b)
    for i in range(a.shape[0]):
        sq_dist_row(a, i, bT, 0, C[i])


def sq_dists(a, b):
    """C_ij = ||a_i - b_j||^2 in float64, a (N, D), b (M, D) -> (N, M)."""
    a, b = check_pair(a, b)
    C = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    sq_dists_into(a, b, C)
    return C


def check_pair(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise FmnumpyError(f"point sets must be (N, D) and (M, D) with the same D, got "
                           f"{a.shape} and {b.shape}")
    if not (a.dtype == b.dtype and a.dtype in (np.float32, np.float64)):
        a, b = a.astype(np.float64), b.astype(np.float64)     # the sums are float64 anyway
    return np.ascontiguousarray(a), np.ascontiguousarray(b)
