"""GPU twins of the training step and samplers (numba.cuda); ``docs/cuda.md`` maps
each CPU function to its kernel.

Importing this package never needs a GPU or numba-cuda: the kernel modules
(``mlp``, ``step``, ``stepper``, ``solvers``, ``likelihood``) import ``numba.cuda`` and are
loaded only by the functions below.  :func:`require_gpu` is called where a GPU
is actually required and fails with one clear line when there is none.

    cuda_stepper(spec, opt, state, ...)              the twin of step.CpuStepper
    cuda_sample(theta, spec, x0, method, steps, ...) the twin of solvers.integrate_mlp
    cuda_solve_logp(theta, spec, x, l, ...)          the twin of likelihood.integrate_logp
    CudaTrainer, CudaSampler                         the device state and launches
"""
from fmnumpy.errors import FmnumpyError


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


def cuda_stepper(spec, opt, state, batch, path, stream, spirals, seed, time_power,
                 host_batches=False, noise=None):
    """A ``stepper.CudaStepper`` for ``train.run``, with ``state`` uploaded: batches of
    ``batch`` rows on the path (code, parameter) (``FlowMatcher.path_args``), x1 drawn
    on the device (``spirals``) or ``stream``'s x1, or (with ``host_batches``: a
    source, a coupling, labels or a noisy path with the host's ``noise``) the
    stream's whole batches."""
    require_gpu()
    from fmnumpy.euclidean.cuda.stepper import CudaStepper, CudaTrainer
    tr = CudaTrainer(spec, opt, batch, stream=stream, spirals=spirals, seed=seed,
                     start_step=state.step, time_power=time_power, host_batches=host_batches,
                     noise=noise, path=path)
    return CudaStepper(tr, state)


def cuda_sample(theta, spec, x0, method="rk4", steps=100, t0=0.0, t1=1.0, record=0,
                labels=None, guidance=1.0):
    """Integrate particles on the GPU, or (method "jump") jump along a flow map (see
    ``solvers.cuda_sample``)."""
    require_gpu()
    from fmnumpy.euclidean.cuda.solvers import cuda_sample as _sample
    return _sample(theta, spec, x0, method, steps, t0, t1, record, labels, guidance)


def cuda_solve_logp(theta, spec, x, l, method="rk4", steps=100, t0=0.0, t1=1.0):
    """Solve the augmented state [x, l] on the GPU (see ``likelihood.cuda_solve_logp``)."""
    require_gpu()
    from fmnumpy.euclidean.cuda.likelihood import cuda_solve_logp as _solve
    return _solve(theta, spec, x, l, method, steps, t0, t1)


def __getattr__(name):
    if name in ("CudaTrainer", "CudaSampler"):
        require_gpu()
        from fmnumpy.euclidean.cuda import solvers, stepper
        return {"CudaTrainer": stepper.CudaTrainer, "CudaSampler": solvers.CudaSampler}[name]
    raise AttributeError(name)
