"""Simulation-based inference tasks of the sbibm benchmark (Lueckmann et al., "Benchmarking
Simulation-Based Inference", AISTATS 2021, appendix), written from their published
definitions: a prior over the parameters theta and a simulator x ~ p(x | theta).

    task = TASKS["two_moons"]
    theta = task.prior(n, rng)              (n, dim_theta)
    x = task.simulate(theta, rng)           (n, dim_x)

A task is plain data beside two functions (the protocol of a simulator): anything with
``prior``, ``simulate``, ``dim_theta``, ``dim_x`` and ``bounds`` (the prior's box, or None
for an unbounded prior) is one.
"""
import math
from collections import namedtuple

import numpy as np

from fmnumpy.errors import FmnumpyError

Task = namedtuple("Task", "name dim_theta dim_x prior simulate bounds description")


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


TASKS = {
    "two_moons": Task("two_moons", 2, 2, _uniform(-1.0, 1.0, 2), _two_moons, (-1.0, 1.0),
                      "a crescent whose position folds the parameters: a bimodal posterior"),
    "gaussian_linear": Task("gaussian_linear", 10, 10, _gaussian_prior, _gaussian_linear,
                            None, "x ~ N(theta, 0.1 I), prior N(0, 0.1 I): a Gaussian "
                            "posterior in closed form"),
    "gaussian_mixture": Task("gaussian_mixture", 2, 2, _uniform(-10.0, 10.0, 2),
                             _gaussian_mixture, (-10.0, 10.0), "x from a wide and a "
                             "narrow Gaussian around theta: a posterior with heavy tails"),
    "slcp": Task("slcp", 5, 8, _uniform(-3.0, 3.0, 5), _slcp, (-3.0, 3.0),
                 "simple likelihood, complex posterior: four 2-D Gaussian draws whose "
                 "mean and covariance are the parameters; four symmetric modes"),
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
