"""Simulation-based inference tasks of the sbibm benchmark (Lueckmann et al., "Benchmarking
Simulation-Based Inference", AISTATS 2021, appendix), written from their published
definitions: a prior over the parameters theta and a simulator x ~ p(x | theta).

    task = TASKS["two_moons"]
    theta = task.prior(n, rng)              (n, dim_theta)
    x = task.simulate(theta, rng)           (n, dim_x)

A task is plain data beside two functions (the protocol of a simulator): anything with
``prior``, ``simulate``, ``dim_theta``, ``dim_x``, ``bounds`` (a uniform prior's box, or
None for an unbounded prior) and ``precision`` (a zero-mean Gaussian prior's precision
matrix, or None) is one.
"""
import math
from collections import namedtuple

import numpy as np

from fmnumpy.errors import FmnumpyError

Task = namedtuple("Task", "name dim_theta dim_x prior simulate bounds description precision",
                  defaults=(None,))


def _uniform(low, high, dim):
    def prior(n, rng):
        return rng.uniform(low, high, size=(int(n), dim))
    return prior


def _two_moons(theta, rng):
    """A crescent of radius r ~ N(0.1, 0.01^2) at angle a ~ U(-pi/2, pi/2), shifted by
    0.25 and by (-|theta_1 + theta_2| / sqrt 2, (theta_2 - theta_1) / sqrt 2)."""
    n = theta.shape[0]
    a = rng.uniform(-math.pi / 2.0, math.pi / 2.0, size=n)
    r = 0.1 + 0.01 * rng.standard_normal(n)
    p = np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], axis=1)
    z0 = (theta[:, 0] + theta[:, 1]) / math.sqrt(2.0)
    z1 = (theta[:, 1] - theta[:, 0]) / math.sqrt(2.0)
    return p + np.stack([-np.abs(z0), z1], axis=1)


def _gaussian_mixture(theta, rng):
    """x ~ 0.5 N(theta, I) + 0.5 N(theta, 0.1^2 I)."""
    scale = np.where(rng.random(theta.shape[0]) < 0.5, 1.0, 0.1)[:, None]
    return theta + scale * rng.standard_normal(theta.shape)


def _slcp(theta, rng):
    """Four draws of a 2-D Gaussian with mean (theta_1, theta_2), standard deviations
    theta_3^2 and theta_4^2 and correlation tanh(theta_5), flattened to 8 numbers
    (draw after draw); 1e-6 added to the covariance's diagonal, as in the benchmark."""
    n = theta.shape[0]
    s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, np.tanh(theta[:, 4])
    S = np.empty((n, 2, 2))
    S[:, 0, 0] = s1 ** 2 + 1e-6
    S[:, 1, 1] = s2 ** 2 + 1e-6
    S[:, 0, 1] = S[:, 1, 0] = rho * s1 * s2
    L = np.linalg.cholesky(S)                                    # (n, 2, 2)
    z = rng.standard_normal((n, 4, 2))
    x = theta[:, None, :2] + np.einsum("nij,nkj->nki", L, z)
    return x.reshape(n, 8)


GAUSSIAN_LINEAR_SCALE = 0.1      # the prior's and the noise's variance, per dimension


def _gaussian_prior(n, rng):
    return math.sqrt(GAUSSIAN_LINEAR_SCALE) * rng.standard_normal((int(n), 10))


def _gaussian_linear(theta, rng):
    """x ~ N(theta, 0.1 I) in 10 dimensions."""
    return theta + math.sqrt(GAUSSIAN_LINEAR_SCALE) * rng.standard_normal(theta.shape)


def gaussian_linear_posterior(x, n, rng):
    """Exact posterior samples of gaussian_linear for one observation x (10,): the prior
    N(0, 0.1 I) times the likelihood N(x; theta, 0.1 I) is N(x / 2, 0.05 I)."""
    x = np.asarray(x, dtype=np.float64).reshape(1, 10)
    return x / 2.0 + math.sqrt(GAUSSIAN_LINEAR_SCALE / 2.0) * rng.standard_normal((n, 10))


GLM_STEPS = 100             # bins of the Bernoulli GLM's white-noise stimulus
GLM_FILTER = 9              # length of its linear filter; theta = (offset, filter)


def glm_design():
    """The GLM's design matrix (100, 10): a column of ones (the offset), then the stimulus
    I ~ N(0, 1) of 100 bins (``RandomState(42)``, stored as float32, as the benchmark
    froze it) delayed by 0..8 bins: row i, column 1 + j holds I[i - j] (0 before the start)."""
    stimulus = np.random.RandomState(42).randn(GLM_STEPS).astype(np.float32)
    X = np.zeros((GLM_STEPS, 1 + GLM_FILTER))
    X[:, 0] = 1.0
    for j in range(GLM_FILTER):
        X[j:, 1 + j] = stimulus[:GLM_STEPS - j]
    return X


def glm_prior_precision():
    """The prior's precision (10, 10): 0.5 for the offset; F^T F for the filter, with
    F = D^2 + diag(sqrt(i / 9)), i = 0..8, D the first difference (ones on the diagonal, -1
    below it), which penalizes the filter's second differences: a smooth filter."""
    M = GLM_FILTER
    Dm = np.eye(M) - np.eye(M, k=-1)
    F = Dm @ Dm + np.diag(np.sqrt(np.arange(M) / M))
    P = np.zeros((M + 1, M + 1))
    P[0, 0] = 0.5
    P[1:, 1:] = F.T @ F
    return P


def _glm_prior(n, rng):
    """theta ~ N(0, P^-1): theta = L^-T z for P = L L^T and z ~ N(0, I)."""
    L = np.linalg.cholesky(glm_prior_precision())
    z = rng.standard_normal((int(n), GLM_FILTER + 1))
    return np.linalg.solve(L.T, z.T).T


def glm_spikes(theta, rng):
    """The spike trains (n, 100) of 0/1: bin i spikes with probability
    sigmoid(X_i theta), X the design matrix."""
    psi = theta @ glm_design().T
    return (rng.random(psi.shape) < 1.0 / (1.0 + np.exp(-psi))).astype(np.float64)


def _bernoulli_glm(theta, rng):
    """x = X^T y (10,), the GLM's sufficient statistics: the spike count, then the
    spike-triggered sums of the stimulus at delays 0..8."""
    return glm_spikes(theta, rng) @ glm_design()


def glm_log_posterior(theta, x):
    """log p(theta | x) + const (n,) of bernoulli_glm for its statistics x = X^T y (10,): the
    prior's -theta^T P theta / 2 plus the Bernoulli log-likelihood x^T theta - sum_i
    log(1 + exp(X_i theta)), which depends on the spikes y only through x."""
    psi = theta @ glm_design().T
    return (theta @ np.asarray(x, dtype=np.float64)
            - np.logaddexp(0.0, psi).sum(axis=1)
            - 0.5 * np.einsum("ni,ij,nj->n", theta, glm_prior_precision(), theta))


TASKS = {
    "two_moons": Task("two_moons", 2, 2, _uniform(-1.0, 1.0, 2), _two_moons, (-1.0, 1.0),
                      "a crescent whose position folds the parameters: a bimodal posterior"),
    "gaussian_linear": Task("gaussian_linear", 10, 10, _gaussian_prior, _gaussian_linear,
                            None, "x ~ N(theta, 0.1 I), prior N(0, 0.1 I): a Gaussian "
                            "posterior in closed form", np.eye(10) / GAUSSIAN_LINEAR_SCALE),
    "gaussian_mixture": Task("gaussian_mixture", 2, 2, _uniform(-10.0, 10.0, 2),
                             _gaussian_mixture, (-10.0, 10.0), "x from a wide and a "
                             "narrow Gaussian around theta: a posterior with heavy tails"),
    "slcp": Task("slcp", 5, 8, _uniform(-3.0, 3.0, 5), _slcp, (-3.0, 3.0),
                 "simple likelihood, complex posterior: four 2-D Gaussian draws whose "
                 "mean and covariance are the parameters; four symmetric modes"),
    "bernoulli_glm": Task("bernoulli_glm", 10, 10, _glm_prior, _bernoulli_glm, None,
                          "a neuron's spikes from a generalized linear model of a white-noise "
                          "stimulus; x its sufficient statistics, a smooth Gaussian prior",
                          glm_prior_precision()),
    "bernoulli_glm_raw": Task("bernoulli_glm_raw", 10, 100, _glm_prior, glm_spikes, None,
                              "bernoulli_glm observed as the raw spike train: 100 numbers "
                              "of 0 and 1", glm_prior_precision()),
}


def get_task(name):
    """The task ``name`` from ``TASKS`` (a one-line error naming them otherwise)."""
    if isinstance(name, Task):
        return name
    try:
        return TASKS[str(name)]
    except KeyError:
        raise FmnumpyError(f"unknown task {name!r}; choose one of: "
                           + ", ".join(TASKS)) from None


def simulate(task, n, seed=0):
    """(theta (n, dim_theta), x (n, dim_x)): n parameters from the prior and one
    simulation of each, drawn from ``default_rng([seed, 40])`` (prior) and
    ``default_rng([seed, 41])`` (simulator)."""
    from fmnumpy.errors import positive_int
    task = get_task(task)
    n = positive_int("the number of simulations", n)
    theta = task.prior(n, np.random.default_rng([int(seed), 40]))
    return theta, task.simulate(theta, np.random.default_rng([int(seed), 41]))


def in_prior(task, theta):
    """(n,) bool: the rows of theta inside the prior's support."""
    if task.bounds is None:
        return np.ones(theta.shape[0], dtype=bool)
    lo, hi = task.bounds
    return np.all((theta >= lo) & (theta <= hi), axis=1)
