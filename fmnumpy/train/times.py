"""Training times, shared by every continuous family: t = 1 - (1 - u)^K of uniform u
(docs/flow_matching.md#time-sampling)."""
from fmnumpy.errors import positive_finite


def time_from_uniform(u, power):
    """The training time t = 1 - (1 - u)^power of a uniform draw u in [0, 1).

    t then has the Beta(1, 1/power) density p(t) = (1 - t)^(1/power - 1) / power:
    power = 1 is uniform, power > 1 puts more of the batch near the data (t = 1).
    Drawing t from p(t) weights the loss by p(t) at each t, which leaves its
    minimiser, E[ut | xt], unchanged (docs/flow_matching.md#time-sampling).
    Scalar math, so the same function serves NumPy arrays and the GPU kernels.
    """
    return 1.0 - (1.0 - u) ** power


def check_time_power(power):
    """``power`` as a float if it is usable by :func:`time_from_uniform` (finite, > 0)."""
    return positive_finite("time_power", power, " (1 draws t uniformly)")
