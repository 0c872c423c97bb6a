"""fmnumpy: flow matching from scratch in NumPy and Numba.

Convention: x0 ~ N(0, I) at t = 0, data x1 at t = 1, the straight path
xt = (1 - t) x0 + t x1 with target velocity ut = x1 - x0, and sampling
integrates dx/dt = v(x, t) from t = 0 to t = 1.
"""
import os as _os

from ._cache import drop_stale_cache as _drop_stale_cache

_drop_stale_cache(_os.path.dirname(_os.path.abspath(__file__)))   # before anything compiled

from .api import DEFAULTS, FlowMatcher  # noqa: E402
from .datasets import DATASETS, load_data  # noqa: E402
from .discrete_api import DiscreteFlowMatcher  # noqa: E402
from .errors import FmnumpyError  # noqa: E402
from .manifold_api import ManifoldFlowMatcher  # noqa: E402

__version__ = "0.1.0"
__all__ = ["FlowMatcher", "DiscreteFlowMatcher", "ManifoldFlowMatcher", "FmnumpyError", "DATASETS", "DEFAULTS", "load_data", "__version__"]
