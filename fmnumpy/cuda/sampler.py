"""Sampling on the GPU: the twin of ``solvers.integrate_mlp``.

Dimension letters: N particles, D data dimension, S stages, R recorded states.
"""
import numpy as np

from ..errors import FmnumpyError
from ..solvers import tableau
from .device import cuda_module, fastmath, launch, threads_per_block
from .layout import layer_table
from .sample_kernels import SMAX, make_rk_mlp
from .tiles import TILES, mlp_config, register_cap


def tableau_array(method):
    """The Butcher tableau of ``method`` as one (S + 2, S) float64 array:
    row 0 = c, row 1 = b, rows 2.. = A (solvers.TABLEAUS)."""
    tab = tableau(method)
    S = tab.stages
    if S > SMAX:
        raise FmnumpyError(f"method {method!r} has {S} stages; the CUDA sampler supports "
                           f"at most {SMAX}")
    out = np.zeros((S + 2, S))
    out[0], out[1], out[2:] = tab.c, tab.b, tab.A
    return out


class CudaSampler:
    """The network ``spec`` with weights ``theta`` on the device, ready to
    integrate particles that are already on the device (no host copies).

    The block layout is the first of :meth:`layouts` whose kernel builds and
    launches: resident weights and dynamic shared memory where ``TILES`` allow
    them, else the streamed layout in static shared memory.  ``fallbacks`` lists
    the layouts given up and why."""

    def __init__(self, theta, spec):
        cu = cuda_module()
        self.spec = spec
        self.fallbacks = []
        self._layouts = self.layouts(spec)
        self._use(self._layouts.pop(0))
        self.theta = cu.to_device(np.ascontiguousarray(theta, dtype=np.float32))
        self.lay = cu.to_device(layer_table(spec.sizes)[0])
        self._tabs = {}
        self._no_traj = cu.device_array((1, 1, spec.dim), dtype=np.float32)

    @staticmethod
    def layouts(spec):
        """Block layouts to try, best first (``tiles.mlp_config``)."""
        width, threads = int(max(spec.sizes)), threads_per_block()
        dyn = int(TILES["mlp_dynamic_shared"])
        res = tuple(int(n) for n in spec.sizes[:-2]) if int(TILES["mlp_resident"]) else ()
        out = []
        # resident W in static memory only when dynamic memory is not allowed: at
        # PB = 32 or less it is no fallback for a refused dynamic layout
        for r, d in ((res, dyn), ((), dyn), ((), 0), (res, 0)):
            try:
                cfg = mlp_config(width, threads, resident=r, dynamic=d)
            except FmnumpyError:        # resident weights too large for shared memory
                continue
            if cfg not in out:
                out.append(cfg)
        return out or [mlp_config(width, threads)]    # (raises: too wide)

    def _use(self, cfg):
        self.cfg = cfg
        self.kernel = make_rk_mlp(cfg, self.spec.dim, fastmath("sampler"), register_cap(cfg.NT),
                                  int(TILES["mlp_stage_regs"]), int(self.spec.kind))
        self._ready = False

    def tab(self, method):
        if method not in self._tabs:
            self._tabs[method] = cuda_module().to_device(tableau_array(method))
        return self._tabs[method]

    def integrate(self, x, method="rk4", steps=100, t0=0.0, t1=1.0, traj=None, every=1):
        """Integrate the device array x (N, D) in place; fill the device array traj
        (R + 1, N, D) every ``every`` steps if given.  Asynchronous."""
        N = x.shape[0]
        if N == 0:
            return x
        h = (float(t1) - float(t0)) / int(steps)
        n_rec = 0 if traj is None else traj.shape[0]
        spec = self.spec
        args = (self.theta, self.lay, self.tab(method), x,
                self._no_traj if traj is None else traj, float(t0), h, int(steps), int(every),
                n_rec, spec.n_freq)
        while True:
            cfg = self.cfg
            try:
                launch(self.kernel, -(-N // cfg.PB), cfg.NT, cfg.DYN, args, not self._ready)
                self._ready = True
                return x
            except Exception as e:      # the layout does not build or launch here
                if self._ready or not self._layouts:
                    raise
                self.fallbacks.append((cfg, repr(e)[:200]))
                self._use(self._layouts.pop(0))


def cuda_sample(theta, spec, x0, method="rk4", steps=100, t0=0.0, t1=1.0, record=0):
    """Same arguments and results as ``solvers.integrate_mlp``: x(t1) (N, D) and,
    with ``record`` > 0, the trajectory (record + 1, N, D)."""
    tableau(method)
    steps = int(steps)
    if steps < 1:
        raise FmnumpyError(f"steps must be a positive integer, got {steps}")
    x = np.ascontiguousarray(x0, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != spec.dim:
        raise FmnumpyError(f"x0 must have shape (N, {spec.dim}), got {x.shape}")
    cu = cuda_module()
    sampler = CudaSampler(theta, spec)
    x_d = cu.to_device(x)
    traj_d = None
    every = 1
    if record:
        record = min(int(record), steps)
        every = steps // record
        traj_d = cu.device_array((steps // every + 1, x.shape[0], x.shape[1]), dtype=np.float32)
    sampler.integrate(x_d, method, steps, t0, t1, traj_d, every)
    out = x_d.copy_to_host()
    return (out, traj_d.copy_to_host()) if record else out
