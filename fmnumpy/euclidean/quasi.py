"""Quasi-random draws of the N(0, I) source.

A flow maps each source point to one sample, so n independent source points give n
independent samples, with the clumps and gaps of independent draws: the counts per
mode of a mixture fluctuate by about sqrt(n p (1 - p)), and a curve is covered
unevenly.  Scrambled Sobol points (Owen scrambling, SciPy's ``stats.qmc.Sobol``)
fill the unit cube far more evenly; pushed through the inverse normal CDF they are
a low-discrepancy N(0, I) set, and the flow carries that evenness to the samples.
Each point is still distributed exactly as N(0, I) (the scrambling is random); the
points are no longer independent of each other.  Use them where n samples should
represent the distribution as well as possible (pictures, sample-set metrics,
Monte Carlo averages); use the independent draws where independence matters (a
statistical test, a bootstrap).
"""
import warnings

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from fmnumpy.errors import FmnumpyError

# Sobol points in [0, 1) can be 0 exactly; the inverse CDF needs the open interval.
_EPS = np.finfo(np.float64).tiny
MAX_DIM = 21201           # SciPy's table of direction numbers


def sobol_normal(n, dim, rng):
    """(n, dim) float64 quasi-random N(0, I) points: the first n points of a Sobol
    sequence scrambled with ``rng`` (a Generator), through the normal inverse CDF."""
    if dim > MAX_DIM:
        raise FmnumpyError(f"quasi-random source draws go up to {MAX_DIM} dimensions, "
                           f"this model has {dim}")
    with warnings.catch_warnings():
        # n not a power of 2 loses some of the balance of the full net, not its
        # low discrepancy; the warning would repeat for every such n.
        warnings.simplefilter("ignore", UserWarning)
        u = qmc.Sobol(dim, scramble=True, seed=rng).random(n)
    return ndtri(np.maximum(u, _EPS))
