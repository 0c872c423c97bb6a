"""fmnumpy: flow matching from scratch in NumPy and Numba.

Convention: x0 ~ N(0, I) at t = 0, data x1 at t = 1, the straight path
xt = (1 - t) x0 + t x1 with target velocity ut = x1 - x0, and sampling
integrates dx/dt = v(x, t) from t = 0 to t = 1.
"""
import os as _os

from fmnumpy._cache import drop_stale_cache as _drop_stale_cache

_drop_stale_cache(_os.path.dirname(_os.path.abspath(__file__)))   # before anything compiled

from fmnumpy.discrete.estimator import DiscreteFlowMatcher  # noqa: E402
from fmnumpy.errors import FmnumpyError  # noqa: E402
from fmnumpy.euclidean.datasets import DATASETS, load_data  # noqa: E402
from fmnumpy.euclidean.estimator import DEFAULTS, FlowMatcher  # noqa: E402
from fmnumpy.manifold.estimator import ManifoldFlowMatcher  # noqa: E402
from fmnumpy.train.checkpoint import load_checkpoint as _load_checkpoint  # noqa: E402
from fmnumpy.train.estimator import checkpoint_family  # noqa: E402

__version__ = "0.2.0"

# the estimator of each family, by the ``family`` field of its checkpoints
FAMILIES = {"euclidean": FlowMatcher, "manifold": ManifoldFlowMatcher,
            "discrete": DiscreteFlowMatcher}


def load(path):
    """The model stored in a checkpoint, as the estimator of its family (any checkpoint
    written by fmnumpy 0.1.0 or later)."""
    meta, arrays = _load_checkpoint(path)
    family = checkpoint_family(meta)
    if family not in FAMILIES:
        raise FmnumpyError(f"{path} holds a model of an unknown family {family!r}; this "
                           f"fmnumpy reads: {', '.join(FAMILIES)}")
    return FAMILIES[family].from_checkpoint(meta, arrays, path)


__all__ = ["FlowMatcher", "DiscreteFlowMatcher", "ManifoldFlowMatcher", "FmnumpyError",
           "FAMILIES", "load", "DATASETS", "DEFAULTS", "load_data", "__version__"]
