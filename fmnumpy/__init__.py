"""fmnumpy: flow matching from scratch in NumPy and Numba.

Convention: x0 ~ N(0, I) at t = 0, data x1 at t = 1, the straight path
xt = (1 - t) x0 + t x1 with target velocity ut = x1 - x0, and sampling
integrates dx/dt = v(x, t) from t = 0 to t = 1.
"""
from .api import DEFAULTS, FlowMatcher
from .datasets import DATASETS, load_data
from .errors import FmnumpyError

__version__ = "0.1.0"
__all__ = ["FlowMatcher", "FmnumpyError", "DATASETS", "DEFAULTS", "load_data", "__version__"]
