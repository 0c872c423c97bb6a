"""Sampling on the GPU, the twin of ``solvers.integrate_mlp``: the fused sampler, one launch integrates every particle through ALL time steps
of an explicit Runge-Kutta method (``solvers.rk_integrate``'s loop, on chip).

Dimension letters: N particles, D data dimension, S stages (at most SMAX).

Each block owns PB particles: their state x and the stage velocities k_i stay in
shared memory, and the network is evaluated by the block MLP (``mlp.py``),
whose weights stream through shared memory k-tile by k-tile, or, when they fit
(``cfg.RES``, model A), are loaded into shared memory once for all time steps.  The method is
data, the Butcher tableau ``tab`` (S + 2, S): row 0 = c, row 1 = b, rows 2.. = A
(``solvers.TABLEAUS``).  With step h:

    k_i = v(x + h sum_{j<i} a_ij k_j,  t + c_i h),     x <- x + h sum_i b_i k_i.
"""
import functools

import numpy as np
from numba import cuda

from fmnumpy.errors import FmnumpyError
from fmnumpy.ode.solvers import check_steps, tableau
from fmnumpy.euclidean.integrate import conditioning
from fmnumpy.euclidean.cuda.device import (cuda_module, fastmath, launch, simulator,
    threads_per_block)
from fmnumpy.euclidean.cuda.layout import B_OFF, N_IN, W_OFF, layer_table
from fmnumpy.euclidean.cuda.mlp import make_block_mlp
from fmnumpy.euclidean.cuda.tiles import TILES, mlp_config, register_cap, stage_regs

SMAX = 4      # stages of the largest tableau (rk4)


@functools.lru_cache(maxsize=None)
def make_rk_mlp(cfg, D, fastmath, max_registers=0, stage_regs=16, kind=0, x_freqs=0, kpass=4,
                guided=False, x_dirs="diagonals"):
    """The fused sampler kernel for block layout ``cfg``, data dimension D,
    activation code ``kind`` and ``x_freqs`` octaves of plane waves (compile-time
    constants: no branch on the activation in the epilogue); ``max_registers`` > 0
    caps the registers per thread; ``kpass``: see ``mlp.make_block_mlp``.

    ``guided``: classifier-free guidance, v = v_null + w (v_y - v_null)
    (``solvers.mlp_field``): each particle has two rows in the block MLP, p with its
    label y and PP + p with the null class, so a block carries PP = PB / 2 particles."""
    from numba import float32
    mlp = make_block_mlp(cfg, D, fastmath, stage_regs, x_freqs, 1, kind, kpass, x_dirs)
    narrow_linear, features, hidden_stack = mlp.narrow_linear, mlp.features, mlp.hidden_stack
    gap_features = mlp.gap_features
    load_resident = mlp.load_resident
    PB, NT, RES, DYN = cfg.PB, cfg.NT, cfg.RES, cfg.DYN > 0
    RED, HSIZE, HSTATIC, WSTATIC = mlp.RED, mlp.HSIZE, mlp.HSTATIC, mlp.WSTATIC
    GUIDED = bool(guided)
    PP = PB // 2 if GUIDED else PB
    E = mlp.E
    rk = rk_stage_functions(D, fastmath)
    stage_input, increment = rk.stage_input, rk.increment

    cap = {"max_registers": max_registers} if max_registers and not simulator() else {}

    @cuda.jit(fastmath=fastmath, **cap)
    def rk_mlp(theta, lay, tab, x, traj, t0, h, steps, every, n_freq, y, w):
        """Integrate x (N, D) in place from t0 with ``steps`` steps of size h; if
        every > 0, traj[0] = x(t0) and traj[r] = x after r * every steps.  y: the
        particles' labels (N,) of a conditional network, or one -1 (no label input);
        w: the guidance weight (``guided``).  A tableau with one more row (``jump``) feeds
        a flow map the gap tab[S + 2, 0] h as its second time: Euler so is the map's
        jumps (``flowmap.jump``).  Launched with cfg.DYN bytes of dynamic shared memory."""
        hst = cuda.shared.array(HSTATIC, float32, alignment=16)  # activations (PB, HS), flat
        wst = cuda.shared.array(WSTATIC, float32, alignment=16)  # k-tile of W, or all W
        dyn = cuda.shared.array(0, float32, alignment=16)        # hs when DYN
        h1 = dyn if DYN else hst
        w1 = wst
        red = cuda.shared.array(RED, float32)
        xs = cuda.shared.array((PP, D), float32)          # particle states
        ks = cuda.shared.array((SMAX, PP, D), float32)    # stage velocities
        vo = cuda.shared.array((PB if GUIDED else 1, D), float32)  # v_y and v_null rows
        xin = cuda.local.array(D, float32)
        tid = cuda.threadIdx.x
        N = x.shape[0]
        row0 = cuda.blockIdx.x * PP
        L = lay.shape[0]
        S = tab.shape[1]
        gap = float32(h * tab[S + 2, 0]) if tab.shape[0] > S + 2 else float32(0.0)
        F = lay[0, N_IN]
        n_rec = traj.shape[0] if every > 0 else 0
        null = F - (E + 1 + 2 * n_freq) - 1     # the null class: the last one-hot column
        last = y.shape[0] - 1
        for e in range(tid, HSIZE, NT):
            h1[e] = 0.0                 # columns past a layer's width stay zero
        if RES:
            load_resident(theta, lay, w1, tid)
        for r in range(tid, PP, NT):
            for d in range(D):
                xs[r, d] = x[row0 + r, d] if row0 + r < N else 0.0
                if n_rec > 0 and row0 + r < N:
                    traj[0, row0 + r, d] = xs[r, d]
        cuda.syncthreads()
        for n in range(steps):
            t = t0 + n * h
            for st in range(S):
                # stage input x + h sum_j a_ij k_j at time t + c_i h, as features
                ts = float32(t + tab[0, st] * h)
                for r in range(tid, PP, NT):
                    stage_input(xs, ks, tab, st, h, r, xin)
                    features(h1, r, xin, ts, n_freq, F, y[min(row0 + r, last)])
                    if gap != 0.0:
                        gap_features(h1, r, gap, n_freq, F)
                    if GUIDED:
                        features(h1, PP + r, xin, ts, n_freq, F, null)
                cuda.syncthreads()
                hidden_stack(h1, theta, lay, w1, tid)
                lo = L - 1
                if GUIDED:
                    narrow_linear(h1, lay[lo, N_IN], theta, lay[lo, W_OFF], lay[lo, B_OFF],
                                  red, vo, tid)
                    for r in range(tid, PP, NT):
                        for d in range(D):
                            ks[st, r, d] = vo[PP + r, d] + w * (vo[r, d] - vo[PP + r, d])
                else:
                    narrow_linear(h1, lay[lo, N_IN], theta, lay[lo, W_OFF], lay[lo, B_OFF],
                                  red, ks[st], tid)
            # x <- x + h sum_i b_i k_i
            for r in range(tid, PP, NT):
                for d in range(D):
                    xs[r, d] += h * increment(ks, tab, r, d)
                    if n_rec > 0 and (n + 1) % every == 0 and (n + 1) // every < n_rec \
                            and row0 + r < N:
                        traj[(n + 1) // every, row0 + r, d] = xs[r, d]
            cuda.syncthreads()
        for r in range(tid, PP, NT):
            if row0 + r < N:
                for d in range(D):
                    x[row0 + r, d] = xs[r, d]

    return rk_mlp


@functools.lru_cache(maxsize=None)
def rk_stage_functions(D, fastmath):
    """The Runge-Kutta stage combinations of the fused kernels (this sampler and
    ``cuda/likelihood.py``), for the tableau array ``tab`` of :func:`tableau_array`:
    ``stage_input`` and ``increment``."""
    from numba import float32

    @cuda.jit(device=True, fastmath=fastmath)
    def stage_input(xs, ks, tab, st, h, p, xin):
        """xin = x_p + h sum_{j < st} a_{st, j} k_j[p]: particle p's input to stage st."""
        for d in range(D):
            v = float32(xs[p, d])
            for j in range(st):
                v += h * tab[2 + st, j] * ks[j, p, d]
            xin[d] = v

    @cuda.jit(device=True, fastmath=fastmath)
    def increment(ks, tab, p, d):
        """sum_i b_i k_i[p, d]: the step's slope of coordinate d of particle p (ks: the
        stage slopes (SMAX, PP, D), or the likelihood's (SMAX, PP, 1) of log p)."""
        inc = 0.0
        for st in range(tab.shape[1]):
            inc += tab[1, st] * ks[st, p, d]
        return inc

    class Namespace:
        pass

    ns = Namespace()
    ns.stage_input, ns.increment = stage_input, increment
    return ns


def tableau_array(method):
    """The Butcher tableau of ``method`` as one (S + 2, S) float64 array:
    row 0 = c, row 1 = b, rows 2.. = A (solvers.TABLEAUS); "jump": Euler's and one more
    row, [1]: the gap a flow map's network sees is 1 step (``rk_mlp``)."""
    if method == "jump":
        return np.vstack([tableau_array("euler"), np.ones((1, 1))])
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

    def __init__(self, theta, spec, guided=False):
        cu = cuda_module()
        self.spec = spec
        self.guided = bool(guided)       # classifier-free guidance: two rows per particle
        self.fallbacks = []
        self._layouts = self.layouts(spec)
        self._use(self._layouts.pop(0))
        self.theta = cu.to_device(np.ascontiguousarray(theta, dtype=np.float32))
        self.lay = cu.to_device(layer_table(spec.sizes)[0])
        self._tabs = {}
        self._no_traj = cu.device_array((1, 1, spec.dim), dtype=np.float32)
        self._no_labels = cu.to_device(np.full(1, -1, dtype=np.int64))

    @staticmethod
    def group(spec):
        """The multiple of TM the layout needs (rows of a particle one thread owns)."""
        return 1

    def rows(self):
        """Rows per particle in the block MLP: 1, or 2 with guidance (v_y, v_null)."""
        return 2 if self.guided else 1

    @classmethod
    def layouts(cls, spec):
        """Block layouts to try, best first (``tiles.mlp_config``)."""
        width, threads = int(max(spec.sizes)), threads_per_block()
        dyn = int(TILES["mlp_dynamic_shared"])
        res = tuple(int(n) for n in spec.sizes[:-2]) if int(TILES["mlp_resident"]) else ()
        out = []
        # resident W in static memory only when dynamic memory is not allowed: at
        # PB = 32 or less it is no fallback for a refused dynamic layout
        for r, d in ((res, dyn), ((), dyn), ((), 0), (res, 0)):
            try:
                cfg = mlp_config(width, threads, resident=r, dynamic=d, group=cls.group(spec))
            except FmnumpyError:        # resident weights too large for shared memory
                continue
            if cfg not in out:
                out.append(cfg)
        return out or [mlp_config(width, threads, group=cls.group(spec))]   # (raises: too wide)

    def _use(self, cfg):
        self.cfg = cfg
        self.kernel = make_rk_mlp(cfg, self.spec.dim, fastmath("sampler"), register_cap(cfg.NT),
                                  stage_regs("mlp"), int(self.spec.kind),
                                  self.spec.x_freqs, int(TILES["mlp_kpass"]), self.guided,
                                  self.spec.x_dirs)
        self._ready = False

    def tab(self, method):
        if method not in self._tabs:
            self._tabs[method] = cuda_module().to_device(tableau_array(method))
        return self._tabs[method]

    def integrate(self, x, method="rk4", steps=100, t0=0.0, t1=1.0, traj=None, every=1,
                  labels=None, guidance=1.0):
        """Integrate the device array x (N, D) in place (method "jump": ``steps`` jumps of
        a flow map); fill the device array traj
        (R + 1, N, D) every ``every`` steps if given; a conditional network takes the
        particles' labels, a device array (N,) int64, and with ``guided`` the guidance
        weight (``solvers.conditioning``).  Asynchronous."""
        N = x.shape[0]
        if N == 0:
            return x
        if float(guidance) != 1.0 and not self.guided:
            raise ValueError("guidance != 1 needs the sampler built with guided=True")
        h = (float(t1) - float(t0)) / int(steps)
        self._launch(N, (self.theta, self.lay, self.tab(method), x,
                         self._no_traj if traj is None else traj, float(t0), h, int(steps),
                         0 if traj is None else int(every), self.spec.n_freq,
                         self._no_labels if labels is None else labels, float(guidance)))
        return x

    def _launch(self, N, args):
        """One launch over N particles (PB / group per block); on the first launch a
        layout that does not build or launch here falls back to the next."""
        while True:
            cfg = self.cfg
            try:
                launch(self.kernel, -(-N // (cfg.PB // self.rows())), cfg.NT,
                       cfg.DYN, args, not self._ready)
                self._ready = True
                return
            except Exception as e:      # the layout does not build or launch here
                if self._ready or not self._layouts:
                    raise
                self.fallbacks.append((cfg, repr(e)[:200]))
                self._use(self._layouts.pop(0))


def cuda_sample(theta, spec, x0, method="rk4", steps=100, t0=0.0, t1=1.0, record=0,
                labels=None, guidance=1.0):
    """Same arguments and results as ``solvers.integrate_mlp``: x(t1) (N, D) and,
    with ``record`` > 0, the trajectory (record + 1, N, D); a conditional network
    samples ``labels`` (None: the null class) with the ``guidance`` weight.
    Method "jump": ``steps`` jumps of a flow map (``flowmap.jump``), Euler whose
    network sees the gap h = (t1 - t0) / steps."""
    tableau_array(method)
    steps = check_steps(steps)
    x = np.ascontiguousarray(x0, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != spec.dim:
        raise FmnumpyError(f"x0 must have shape (N, {spec.dim}), got {x.shape}")
    cu = cuda_module()
    y, w = conditioning(spec, x.shape[0], labels, guidance)
    sampler = CudaSampler(theta, spec, guided=bool(spec.n_classes) and w != 1.0)
    y_d = cu.to_device(y) if spec.n_classes and x.shape[0] else None
    x_d = cu.to_device(x)
    traj_d = None
    every = 1
    if record:
        record = min(int(record), steps)
        every = steps // record
        traj_d = cu.device_array((steps // every + 1, x.shape[0], x.shape[1]), dtype=np.float32)
    sampler.integrate(x_d, method, steps, t0, t1, traj_d, every, y_d, w)
    out = x_d.copy_to_host()
    return (out, traj_d.copy_to_host()) if record else out
