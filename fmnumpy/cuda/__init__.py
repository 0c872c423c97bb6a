"""GPU twins of the training step and samplers (numba.cuda).

Importing this package never needs a GPU or numba-cuda: the kernel modules
(``block_mlp``, ``train_kernels``, ``sample_kernels``) import ``numba.cuda`` and
are loaded only by the functions below.  :func:`require_gpu` is called where a
GPU is actually required and fails with one clear line when there is none.

    run_cuda(model, data, batch_size, steps, ...)   the twin of train.run
    cuda_sample(theta, spec, x0, method, steps, ...) the twin of solvers.integrate_mlp
    CudaTrainer, CudaSampler                         the device state and launches
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


def run_cuda(model, data, batch_size, steps, **kwargs):
    """Train a FlowMatcher on the GPU (see ``loop.run_cuda``)."""
    require_gpu()
    from .loop import run_cuda as _run
    return _run(model, data, batch_size, steps, **kwargs)


def cuda_sample(theta, spec, x0, method="rk4", steps=100, t0=0.0, t1=1.0, record=0):
    """Integrate particles on the GPU (see ``sampler.cuda_sample``)."""
    require_gpu()
    from .sampler import cuda_sample as _sample
    return _sample(theta, spec, x0, method, steps, t0, t1, record)


def __getattr__(name):
    if name in ("CudaTrainer", "CudaSampler"):
        require_gpu()
        from . import sampler, trainer
        return {"CudaTrainer": trainer.CudaTrainer, "CudaSampler": sampler.CudaSampler}[name]
    raise AttributeError(name)
