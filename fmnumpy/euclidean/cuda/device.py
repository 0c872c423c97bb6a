"""What every CUDA kernel module shares: the lazily imported ``numba.cuda``, the
scalar formulas compiled for the device, and launch settings.

The scalar formulas are the ones the CPU uses, compiled a second time with
``cuda.jit(device=True)`` (STYLE.md rule 3): activations from
``fmnumpy.activations``, the Adam and EMA element updates and the clipping
factor from ``fmnumpy.optim``, the path elements (straight, constant sigma, cosine, bridge) and
the time draw from ``fmnumpy.paths``, the loss element from ``fmnumpy.loss``, the
time feature and the plane waves' tangent from ``fmnumpy.mlp`` and the 2spirals
point from ``fmnumpy.datasets``.  Never
copy a formula here.

Launch settings (threads per block, fastmath) are read from ``fmnumpy.config``
each time a kernel is built or launched, so tests can shrink them.
"""
import functools

from fmnumpy import config
from fmnumpy.nn.activations import act, dact
from fmnumpy.euclidean.datasets import spiral_point
from fmnumpy.nn.loss import cfm_element
from fmnumpy.nn.mlp import time_feature, wave_tangent
from fmnumpy.euclidean.flowmap import gap_feature
from fmnumpy.train.optim import adam_element, clip_scale, ema_element
from fmnumpy.euclidean.paths import cosine_element, gaussian_element, path_element, sb_element
from fmnumpy.train.times import time_from_uniform


def cuda_module():
    """``numba.cuda``, imported on first use (importing fmnumpy.cuda never needs it)."""
    from numba import cuda as _cuda
    return _cuda


def threads_per_block():
    return int(config.CUDA_THREADS_PER_BLOCK)


def fastmath(kernel=None):
    """fastmath of ``kernel`` ("sampler", "forward_backward"; None: the other kernels):
    config.CUDA_FASTMATH_<KERNEL> when set, else config.CUDA_FASTMATH."""
    own = getattr(config, f"CUDA_FASTMATH_{kernel.upper()}", None) if kernel else None
    return bool(config.CUDA_FASTMATH if own is None else own)


def simulator():
    """True under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)."""
    from numba import config as nconfig
    return bool(getattr(nconfig, "ENABLE_CUDASIM", False))


def simulator_compat():
    """Let the CUDA simulator accept ``alignment=`` in shared/local arrays (numba-cuda
    takes it; the simulator built into numba 0.68 does not).  No-op on a real GPU.

    The simulator tells shared arrays apart by the source line that allocates
    them, so the replacement keeps its logic and looks one frame further up."""
    if not simulator():
        return
    import sys
    import traceback

    import numpy as np
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support
    if getattr(kernelapi.FakeCUDAShared.array, "_fmnumpy_compat", False):
        return
    shared_orig = kernelapi.FakeCUDAShared.array
    local_orig = kernelapi.FakeCUDALocal.array

    def shared_array(self, shape, dtype, alignment=None):
        if shape == 0:
            return shared_orig(self, shape, dtype)
        if not isinstance(dtype, np.dtype):
            dtype = numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe(1), limit=1)[-1][0:2]
        res = self._allocations.get(caller)
        if res is None:
            res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    def local_array(self, shape, dtype, alignment=None):
        return local_orig(self, shape, dtype)

    shared_array._fmnumpy_compat = True
    kernelapi.FakeCUDAShared.array = shared_array
    kernelapi.FakeCUDALocal.array = local_array


class DeviceFunctions:
    """The scalar formulas, each compiled once as a CUDA device function."""

    def __init__(self, fm):
        dev = cuda_module().jit(device=True, fastmath=fm)
        self.act = dev(act)
        self.dact = dev(dact)
        self.adam_element = dev(adam_element)
        self.ema_element = dev(ema_element)
        self.clip_scale = dev(clip_scale)
        self.path_element = dev(path_element)
        self.gaussian_element = dev(gaussian_element)
        self.cosine_element = dev(cosine_element)
        self.sb_element = dev(sb_element)
        self.time_from_uniform = dev(time_from_uniform)
        self.cfm_element = dev(cfm_element)
        self.time_feature = dev(time_feature)
        self.wave_tangent = dev(wave_tangent)
        self.gap_feature = dev(gap_feature)
        self.spiral_point = dev(spiral_point)


@functools.lru_cache(maxsize=None)
def device_functions(fm):
    return DeviceFunctions(fm)


def allow_dynamic_shared(kernel, args, nbytes):
    """Let ``kernel`` (a numba-cuda dispatcher) launch with ``nbytes`` of dynamic
    shared memory: when static and dynamic shared memory together exceed 48 KB a
    kernel must opt in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), so every
    kernel with dynamic shared memory does.  Compiles the kernel for the types of
    ``args`` first (None: only the versions already compiled).  No-op under the
    simulator or without dynamic shared memory; raises when the driver refuses."""
    if simulator() or nbytes <= 0:
        return
    from numba import typeof
    from numba.cuda.cudadrv.driver import binding, driver
    if args is not None:
        kernel.compile(tuple(typeof(a) for a in args))
    attr = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    for k in kernel.overloads.values():
        lib = getattr(k, "_codelibrary", None) or getattr(k, "library")
        f = lib.get_cufunc()
        try:        # numba-cuda 0.2x+ loads CUkernel handles (the cuLibrary API)
            driver.cuKernelSetAttribute(attr, int(nbytes), f.handle, f.device.id)
        except Exception:
            driver.cuFuncSetAttribute(f.handle, attr, int(nbytes))


def launch(kernel, grid, block, nbytes, args, first=False):
    """kernel[grid, block, 0, nbytes](*args) on the default stream.  On the first
    launch of a kernel, opt in to ``nbytes`` of dynamic shared memory (again after
    a refused launch, in case the launch compiled another version)."""
    if first:
        allow_dynamic_shared(kernel, args, nbytes)
    try:
        kernel[grid, block, 0, nbytes](*args)
    except Exception:
        if not first or nbytes <= 0 or simulator():
            raise
        allow_dynamic_shared(kernel, None, nbytes)
        kernel[grid, block, 0, nbytes](*args)


def grid_stride_blocks(n, threads):
    """Blocks for a grid-stride loop over n elements."""
    from fmnumpy.euclidean.cuda.tiles import TILES
    return max(1, min(int(TILES["max_grid"]), -(-int(n) // threads)))


def synchronize():
    cuda_module().synchronize()
