"""Sample-quality metrics (``docs/metrics.md``).

Dimension letters: N, M numbers of points, D data dimension.

- ``w2``: exact 2-Wasserstein distance between equal-size point clouds,
  W2 = sqrt(min over permutations pi of 1/N sum_i ||a_i - b_pi(i)||^2), by an
  optimal assignment on the squared Euclidean cost (``assignment.py``).
- ``mmd_rbf``: squared maximum mean discrepancy with Gaussian kernels.
- ``energy_distance``: the squared energy distance (Szekely & Rizzo).
- ``geodesic_w2``: the same on the sphere or the torus, on the geodesic cost.
- ``w1``: exact 1-Wasserstein distance, the assignment on the Euclidean cost.
- ``straightness``: how far the flow of a velocity field is from straight lines.
- ``path_energy``, ``normalized_path_energy``: the kinetic energy of a flow's
  trajectories against the W2^2 between its two ends (Tong et al. 2024, NPE).
- ``evaluate``: w2, mmd and energy in one dict.

Every pairwise sum is computed in float64 by compiled loops over the pairs,
without storing the N x M kernel matrices.
"""
import math

import numpy as np
from numba import njit

from fmnumpy.couplings.distances import (check_pair, sq_dist_row, sq_dists, sq_dists_into,
    transpose)  # noqa: F401
from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.couplings.ot import sliced_guess

MEDIAN_SUBSAMPLE = 1000     # points used by the median-distance heuristic
BANDWIDTH_SCALES = (0.5, 1.0, 2.0)   # default RBF bandwidths, times the median distance


def _check_nonempty(a, b):
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise FmnumpyError("point sets must not be empty")


# ---- W2 -------------------------------------------------------------------------------

def _check_equal_size(a, b, what):
    if a.shape[0] != b.shape[0]:
        raise FmnumpyError(f"exact {what} needs equally many points, got {a.shape[0]} and "
                           f"{b.shape[0]}")


def _assigned_mean(C, u0=None):
    """1/N sum_i C[i, pi(i)] for an optimal assignment pi of the costs C (N, N)
    (``assignment.linear_assignment``; u0 an optional guess of the row potentials)."""
    from fmnumpy.couplings.assignment import linear_assignment
    cols = linear_assignment(C, u0=u0)
    return float(C[np.arange(C.shape[0]), cols].mean())


def w2(a, b):
    """Exact W2 between equal-size point sets a, b (N, D).

    W2^2 = min_pi 1/N sum_i ||a_i - b_pi(i)||^2; for point sets of equal size
    with uniform weights the optimal transport plan is a permutation
    (Birkhoff), so an assignment solves it exactly.
    """
    a, b = check_pair(a, b)
    _check_nonempty(a, b)
    _check_equal_size(a, b, "W2")
    # a starting guess of the dual potentials from sorted projections: the same optimum,
    # found faster (docs/couplings.md, "Jonker-Volgenant")
    return math.sqrt(_assigned_mean(sq_dists(a, b), u0=sliced_guess(a, b)))


def w1(a, b):
    """Exact W1 between equal-size point sets a, b (N, D): min over permutations pi
    of 1/N sum_i ||a_i - b_pi(i)||, an assignment on the Euclidean cost."""
    a, b = check_pair(a, b)
    _check_nonempty(a, b)
    _check_equal_size(a, b, "W1")
    return _assigned_mean(np.sqrt(sq_dists(a, b)))


def path_energy(v, t):
    """E int_0^1 ||v(x_t, t)||^2 dt from the velocities v (K + 1, N, D) at the
    times t (K + 1,) along N trajectories, by the trapezoidal rule in t, averaged
    over the trajectories (docs/metrics.md#path-energy)."""
    v = np.asarray(v, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if v.ndim != 3 or v.shape[0] != t.shape[0] or t.shape[0] < 2:
        raise FmnumpyError(f"path_energy needs v (K + 1, N, D) at K + 1 >= 2 times, got "
                           f"v {v.shape} and t {t.shape}")
    sq = (v ** 2).sum(-1)                                          # (K + 1, N)
    dt = np.diff(t)[:, None]                                       # (K, 1)
    return float((0.5 * dt * (sq[1:] + sq[:-1])).sum(0).mean())


def normalized_path_energy(energy, w2_ends):
    """NPE = |E - W2^2(p0, p1)| / W2^2(p0, p1) (Tong et al. 2024, sec. 5.1): 0 when the
    flow moves every point along its optimal-transport straight line at constant
    speed, the least kinetic energy any flow from p0 to p1 can have."""
    w2sq = float(w2_ends) ** 2
    if not w2sq > 0.0:
        raise FmnumpyError("the normalized path energy needs two different distributions "
                           f"(W2 between them is {w2_ends})")
    return abs(float(energy) - w2sq) / w2sq


# ---- kernel two-sample statistics ----------------------------------------------------

@njit(cache=True)
def _pair_sums(a, b, gammas, same):
    """(sum_ij sum_k exp(-gammas_k ||a_i - b_j||^2), sum_ij ||a_i - b_j||) over all
    ordered pairs (N*M of them); with ``same`` (a is b) each unordered pair
    is visited once and doubled, and the diagonal (distance 0, kernel 1 per
    bandwidth) is added explicitly."""
    N = a.shape[0]
    M = b.shape[0]
    K = gammas.shape[0]
    bT = transpose(b)
    d2 = np.empty(M)
    ksum = 0.0
    dsum = 0.0
    for i in range(N):
        j0 = i + 1 if same else 0
        sq_dist_row(a, i, bT, j0, d2)
        for j in range(j0, M):
            dsum += math.sqrt(d2[j])
        for g in range(K):
            for j in range(j0, M):
                ksum += math.exp(-gammas[g] * d2[j])
    if same:
        ksum = 2.0 * ksum + N * K
        dsum = 2.0 * dsum
    return ksum, dsum


def median_distance(a, b):
    """The median heuristic: the median Euclidean distance between distinct
    points of the pooled set [a; b] (on at most ``MEDIAN_SUBSAMPLE`` points,
    taken at an even stride, so the result is deterministic)."""
    z = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
    if z.shape[0] > MEDIAN_SUBSAMPLE:
        z = z[np.linspace(0, z.shape[0] - 1, MEDIAN_SUBSAMPLE).astype(np.int64)]
    C = sq_dists(z, z)
    iu = np.triu_indices(z.shape[0], k=1)
    h = float(np.sqrt(np.median(C[iu]))) if iu[0].size else 0.0
    return h if h > 0.0 else 1.0      # all points equal: any bandwidth gives MMD 0


def mmd_rbf(a, b, bandwidths=None, unbiased=False):
    """Squared maximum mean discrepancy MMD^2 between point sets a (N, D) and
    b (M, D) with the kernel k(x, y) = 1/K sum_k exp(-||x - y||^2 / (2 h_k^2))
    (Gretton et al. 2012, "A kernel two-sample test").

    bandwidths: the h_k; a number or a sequence.  Default: the median
    heuristic h = ``median_distance(a, b)`` times ``BANDWIDTH_SCALES``
    (0.5, 1, 2), which keeps the test sensitive at several length scales.

    Biased (default, a V-statistic): mean k(a, a') + mean k(b, b') - 2 mean
    k(a, b) over all pairs including i = j; it is >= 0 and 0 when the two
    sets are equal (up to rounding, ~1e-15).  Unbiased (``unbiased=True``, a
    U-statistic): the same without the i = j terms (needs N, M >= 2); its
    expectation is the population MMD^2, and it can be slightly negative.
    """
    a, b = check_pair(a, b)
    _check_nonempty(a, b)
    N, M = a.shape[0], b.shape[0]
    if bandwidths is None:
        h = np.asarray(BANDWIDTH_SCALES) * median_distance(a, b)
    else:
        h = np.atleast_1d(np.asarray(bandwidths, dtype=np.float64))
        if h.ndim != 1 or h.size == 0 or not np.all(np.isfinite(h)) or np.any(h <= 0):
            raise FmnumpyError(f"bandwidths must be positive numbers, got {bandwidths!r}")
    gammas = 1.0 / (2.0 * h * h)
    K = gammas.size
    kaa, _ = _pair_sums(a, a, gammas, True)
    kbb, _ = _pair_sums(b, b, gammas, True)
    kab, _ = _pair_sums(a, b, gammas, False)
    if unbiased:
        if N < 2 or M < 2:
            raise FmnumpyError("the unbiased MMD needs at least 2 points in each set")
        return float(((kaa - N * K) / (N * (N - 1)) + (kbb - M * K) / (M * (M - 1))
                      - 2.0 * kab / (N * M)) / K)
    # >= 0 in exact arithmetic (a squared RKHS norm); clip rounding below 0
    return float(max(0.0, (kaa / (N * N) + kbb / (M * M) - 2.0 * kab / (N * M)) / K))


def energy_distance(a, b):
    """Squared energy distance (Szekely & Rizzo 2013, "Energy statistics")
    between the empirical distributions of a (N, D) and b (M, D):

        E = 2 mean ||a_i - b_j|| - mean ||a_i - a_i'|| - mean ||b_j - b_j'||,

    means over all pairs including i = i' (a V-statistic), so E >= 0 and
    E = 0 when the two empirical distributions are equal (up to rounding,
    ~1e-15).  In 1-D this is ``scipy.stats.energy_distance(a, b) ** 2``.
    """
    a, b = check_pair(a, b)
    _check_nonempty(a, b)
    N, M = a.shape[0], b.shape[0]
    none = np.empty(0, dtype=np.float64)
    _, daa = _pair_sums(a, a, none, True)
    _, dbb = _pair_sums(b, b, none, True)
    _, dab = _pair_sums(a, b, none, False)
    return float(max(0.0, 2.0 * dab / (N * M) - daa / (N * N) - dbb / (M * M)))


# ---- straightness of a flow ------------------------------------------------------------

def straightness(velocity, x0, steps=100, method="euler"):
    """Straightness S of the flow of ``velocity`` from the points x0 (N, D)
    (Liu et al. 2023, "Flow straight and fast"):

        S = E_x0 int_0^1 ||(x1 - x0) - v(x_t, t)||^2 dt,

    where x_t solves dx/dt = v(x, t) from x_0 = x0 and x1 is its end point.
    S = 0 exactly when every trajectory is a straight line run at constant
    speed; one Euler step then samples perfectly.

    velocity: a callable (x (N, D), t float) -> (N, D), e.g. a fitted
    ``FlowMatcher().velocity``.  steps: the number of steps on the uniform
    grid t_k = k / steps.  method:

    - "euler": x_{k+1} = x_k + dt v_k with v_k = v(x_k, t_k), and the
      integral by the left Riemann sum on the same nodes, which is exact for
      the piecewise-linear Euler path: S = dt sum_k ||mean_k v_k - v_k||^2.
      ``steps`` evaluations of v.
    - "rk4": the classical Runge-Kutta path, and the integral by the
      trapezoidal rule on v(x_k, t_k), k = 0..steps (4 steps + 1
      evaluations).

    Returns S as a float (the mean over the N trajectories).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim != 2 or x0.shape[0] == 0:
        raise FmnumpyError(f"x0 must be a non-empty (N, D) array, got shape {x0.shape}")
    steps = positive_int("steps", steps)
    if method not in ("euler", "rk4"):
        raise FmnumpyError(f"unknown straightness method {method!r}; choose one of: euler, rk4")

    def field(x, t):
        out = np.asarray(velocity(x, float(t)), dtype=np.float64)
        if out.shape != x.shape:
            raise FmnumpyError(f"velocity returned shape {out.shape}, expected {x.shape}")
        return out

    dt = 1.0 / steps
    x = x0.copy()
    vs = np.empty((steps + 1,) + x0.shape, dtype=np.float64)     # (steps + 1, N, D)
    for k in range(steps):
        t = k * dt
        k1 = field(x, t)
        vs[k] = k1
        if method == "euler":
            x = x + dt * k1
        else:
            k2 = field(x + 0.5 * dt * k1, t + 0.5 * dt)
            k3 = field(x + 0.5 * dt * k2, t + 0.5 * dt)
            k4 = field(x + dt * k3, t + dt)
            x = x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    chord = x - x0                                                  # (N, D)
    if method == "euler":
        dev = ((chord[None] - vs[:steps]) ** 2).sum(-1)             # (steps, N)
        integral = dt * dev.sum(0)
    else:
        vs[steps] = field(x, 1.0)
        dev = ((chord[None] - vs) ** 2).sum(-1)                     # (steps + 1, N)
        integral = dt * (dev.sum(0) - 0.5 * (dev[0] + dev[-1]))
    return float(integral.mean())


# ---- all at once ----------------------------------------------------------------------

def evaluate(samples, data, max_points=2000):
    """{"w2", "mmd", "energy", "n"} comparing ``samples`` (N, D) with ``data``
    (M, D): exact W2, biased MMD^2 (median-heuristic bandwidths) and the
    squared energy distance, all on the first n = min(N, M, max_points) points
    of each set (W2 needs equal sizes; the cap bounds the O(n^2) work and the
    O(n^3) assignment).  Pass independent, shuffled draws.
    """
    samples, data = check_pair(samples, data)
    _check_nonempty(samples, data)
    n = min(samples.shape[0], data.shape[0], int(max_points))
    a, b = samples[:n], data[:n]
    return dict(w2=w2(a, b), mmd=mmd_rbf(a, b), energy=energy_distance(a, b), n=n)


# ---- classifier two-sample test ---------------------------------------------------------------

C2ST_FOLDS = 5
C2ST_BATCH = 200          # minibatch of the classifier's Adam
C2ST_LR = 1e-3
C2ST_L2 = 1e-4            # alpha: L2 penalty (alpha / 2) ||theta||^2 per batch of C2ST_BATCH
C2ST_TOL, C2ST_PATIENCE = 1e-4, 10   # stop when the epoch loss has not fallen by TOL for
C2ST_MAX_EPOCHS = 1000               # PATIENCE epochs (or after MAX_EPOCHS)


def c2st(a, b, seed=1, folds=C2ST_FOLDS, max_epochs=C2ST_MAX_EPOCHS):
    """Classifier two-sample test: the cross-validated accuracy of a classifier told to
    separate the points a (N, D) from b (M, D), as the sbibm benchmark defines it
    (Lueckmann et al. 2021): both sets standardized by a's mean and standard deviation;
    an MLP with two hidden layers of 10 D ReLU units and one logit, trained on the binary
    cross-entropy with Adam (lr 1e-3, batches of 200, L2 1e-4) until its epoch loss stops
    improving; accuracy on held-out points over ``folds`` shuffled folds, averaged.  About
    0.5 when a and b are draws of one distribution, 1.0 when they do not overlap.

    The network is fmnumpy's own (``nn.mlp``: its forward and hand-written backward; the
    velocity's code with D inputs and one output), in float64, drawn from ``seed``."""
    from fmnumpy.nn.activations import activation_code
    from fmnumpy.nn.mlp import Workspace, init_params, mlp_backward, mlp_forward, zero_grad
    from fmnumpy.train.optim import adam_update
    a, b = check_pair(a, b)
    _check_nonempty(a, b)
    folds = positive_int("folds", folds)
    if folds < 2 or folds > a.shape[0] + b.shape[0]:
        raise FmnumpyError(f"folds must be from 2 to the number of points, got {folds}")
    mean, std = a.mean(axis=0), a.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    X = (np.concatenate([a, b]) - mean) / std
    y = np.concatenate([np.zeros(a.shape[0]), np.ones(b.shape[0])])
    rng = np.random.default_rng(seed)
    order = rng.permutation(X.shape[0])
    H, relu = 10 * X.shape[1], activation_code("relu")
    sizes = np.array([X.shape[1], H, H, 1], dtype=np.int64)
    ws = Workspace(sizes, C2ST_BATCH, dtype=np.float64)   # flat buffers: a smaller last
    accuracy = []                                         # batch uses their front
    for held in np.array_split(order, folds):
        train = np.setdiff1d(order, held, assume_unique=True)
        theta = init_params(sizes, rng, dtype=np.float64)
        m, v, g = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
        best, stale, k = np.inf, 0, 0
        for _ in range(int(max_epochs)):
            perm = train[rng.permutation(train.shape[0])]
            total = 0.0
            for lo in range(0, perm.shape[0], C2ST_BATCH):
                rows = perm[lo:lo + C2ST_BATCH]
                B = rows.shape[0]
                z = mlp_forward(theta, sizes, relu, X[rows], ws.A, ws.Z)[:, 0]
                # binary cross-entropy of the logit z: softplus(z) - y z, and its derivative
                total += float(np.sum(np.logaddexp(0.0, z) - y[rows] * z))
                dz = ((1.0 / (1.0 + np.exp(-z)) - y[rows]) / B)[:, None]
                zero_grad(g)
                mlp_backward(dz, theta, sizes, relu, X[rows], ws.A, ws.Z, g, ws.G1, ws.G2,
                             ws.S, X[:0])
                k += 1
                adam_update(theta, g, m, v, k, C2ST_LR, 0.9, 0.999, 1e-8, C2ST_L2 / B, False)
            loss = total / train.shape[0]
            stale = stale + 1 if loss > best - C2ST_TOL else 0
            best = min(best, loss)
            if stale > C2ST_PATIENCE:
                break
        out = Workspace(sizes, held.shape[0], dtype=np.float64)
        z = mlp_forward(theta, sizes, relu, X[held], out.A, np.zeros(0))[:, 0]
        accuracy.append(float(np.mean((z > 0) == (y[held] == 1))))
    return float(np.mean(accuracy))
