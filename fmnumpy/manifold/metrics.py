"""The geodesic Wasserstein-2 distance between point sets on a manifold."""
import math

import numpy as np

from fmnumpy.metrics import _assigned_mean, _check_equal_size


def geodesic_w2(a, b, manifold="sphere"):
    """Exact W2 between equal-size point sets a, b (N, D) on a manifold
    (``manifolds.py``): the optimal assignment on the squared geodesic cost
    d(a_i, b_j)^2, W2 = sqrt(min_pi 1/N sum_i d(a_i, b_pi(i))^2)."""
    from .manifolds import check_points, manifold_code, sq_dist_matrix
    code = manifold_code(manifold)
    a = check_points(code, a, where="a")
    b = check_points(code, b, a.shape[1], where="b")
    _check_equal_size(a, b, "W2")
    C = np.empty((a.shape[0], b.shape[0]))
    sq_dist_matrix(code, a, b, C)
    return math.sqrt(_assigned_mean(C))
