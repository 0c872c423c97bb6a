"""Sample-quality metrics.

Dimension letters: N, M numbers of points, D data dimension.

``w2``: the exact 2-Wasserstein distance between two equal-size point clouds,
W2 = sqrt(min over permutations pi of 1/N sum_i ||a_i - b_pi(i)||^2), found by an
optimal assignment on the squared Euclidean cost (``docs/metrics.md``).
"""
import numpy as np

from .errors import FmnumpyError


def sq_dists(a, b):
    """C_ij = ||a_i - b_j||^2 in float64, a (N, D), b (M, D) -> (N, M)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    C = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(C, 0.0)


def _check_pair(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise FmnumpyError(f"point sets must be (N, D) and (M, D) with the same D, got "
                           f"{a.shape} and {b.shape}")
    return a, b


def w2(a, b):
    """Exact W2 between equal-size point sets a, b (N, D)."""
    from .assignment import linear_assignment
    a, b = _check_pair(a, b)
    if a.shape[0] != b.shape[0]:
        raise FmnumpyError(f"exact W2 needs equally many points, got {a.shape[0]} and "
                           f"{b.shape[0]}")
    C = sq_dists(a, b)
    cols = linear_assignment(C)
    return float(np.sqrt(C[np.arange(C.shape[0]), cols].mean()))
