"""GPU twins of the training step and samplers (numba.cuda).

Importing this package never needs a GPU; :func:`require_gpu` is called where a
GPU is actually required and fails with one clear line when there is none.
"""
from ..errors import FmnumpyError


def gpu_available():
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:   # numba-cuda missing or a broken driver: no usable GPU
        return False


def require_gpu():
    if not gpu_available():
        raise FmnumpyError("device 'cuda' needs an NVIDIA GPU with a working driver and the "
                           "numba-cuda package (pip install 'fmnumpy[cuda]'); none was "
                           "found, use --device cpu")
