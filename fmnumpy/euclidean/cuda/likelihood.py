"""The exact log-likelihood on the GPU, the twin of ``likelihood.py``: one launch
integrates the augmented state [x, l] of every particle through ALL time steps,

    dx/dt = v(x, t),      dl/dt = -div v(x, t),      div v = sum_d (J e_d)_d,

with the explicit Runge-Kutta loop of the fused sampler (``cuda/solvers.py``).

Dimension letters: N particles, D data dimension, G = D + 1 rows per particle,
PP = PB / G particles per block, S stages.

The divergence is exact, by forward mode as on the CPU: each particle has G rows
in the block MLP (``mlp.group_row``), row 0 its input features and row 1 + m
their tangent along e_m (``tangent_features``).  The block's products run over
all rows at once, z = h W + b for row 0 and dz = dh W for the tangents, and the
epilogue ``hidden_stack`` applies a = sigma(z) to row 0 and the tangent rule
da = sigma'(z) * dz to the others (the thread that owns a particle's row 0 owns
its G rows).  The narrow last layer gives v in row 0 and J e_m in row 1 + m.

Precision: the network runs in float32 as the sampler does; x is float32, the
log-density l and its stage slopes are float64 (the integral of -div v is a sum
of many small terms).
"""
import functools

import numpy as np
from numba import cuda

from fmnumpy.ode.solvers import check_steps
from fmnumpy.euclidean.cuda.device import cuda_module, fastmath, simulator
from fmnumpy.euclidean.cuda.layout import B_OFF, N_IN, W_OFF
from fmnumpy.euclidean.cuda.mlp import make_block_mlp
from fmnumpy.euclidean.cuda.solvers import SMAX, CudaSampler, rk_stage_functions, tableau_array
from fmnumpy.euclidean.cuda.tiles import TILES, register_cap, stage_regs


@functools.lru_cache(maxsize=None)
def make_rk_logp(cfg, D, fastmath, max_registers=0, stage_regs=16, kind=0, x_freqs=0, kpass=4,
                 x_dirs="diagonals"):
    """The fused likelihood kernel for block layout ``cfg`` (TM a multiple of
    D + 1, ``tiles.mlp_config(group=D + 1)``), data dimension D, activation code
    ``kind`` and ``x_freqs`` octaves of plane waves (compile-time constants)."""
    from numba import float32, float64
    G = D + 1
    mlp = make_block_mlp(cfg, D, fastmath, stage_regs, x_freqs, G, kind, kpass, x_dirs)
    narrow_linear, features, tangent_features = (mlp.narrow_linear, mlp.features,
                                                 mlp.tangent_features)
    hidden_stack, load_resident, row_of = mlp.hidden_stack, mlp.load_resident, mlp.row_of
    PB, PP, NT, RES, DYN = cfg.PB, mlp.PP, cfg.NT, cfg.RES, cfg.DYN > 0
    RED, HSIZE, HSTATIC, WSTATIC = mlp.RED, mlp.HSIZE, mlp.HSTATIC, mlp.WSTATIC
    rk = rk_stage_functions(D, fastmath)
    stage_input, increment = rk.stage_input, rk.increment

    cap = {"max_registers": max_registers} if max_registers and not simulator() else {}

    @cuda.jit(fastmath=fastmath, **cap)
    def rk_logp(theta, lay, tab, x, l, t0, h, steps, n_freq):
        """Integrate x (N, D) float32 and l (N,) float64 in place from t0 with
        ``steps`` steps of size h (h < 0: backwards).  Launched with cfg.DYN bytes
        of dynamic shared memory."""
        hst = cuda.shared.array(HSTATIC, float32, alignment=16)  # rows (PB, HS), flat
        wst = cuda.shared.array(WSTATIC, float32, alignment=16)  # k-tile of W, or all W
        dyn = cuda.shared.array(0, float32, alignment=16)        # hs when DYN
        h1 = dyn if DYN else hst
        w1 = wst
        red = cuda.shared.array(RED, float32)
        vo = cuda.shared.array((PB, D), float32)          # last layer: v and J e_m rows
        xs = cuda.shared.array((PP, D), float32)          # particle states
        ls = cuda.shared.array(PP, float64)               # their log-densities
        ks = cuda.shared.array((SMAX, PP, D), float32)    # stage velocities
        kl = cuda.shared.array((SMAX, PP, 1), float64)    # stage slopes -div v
        xin = cuda.local.array(D, float32)
        tid = cuda.threadIdx.x
        N = x.shape[0]
        p0 = cuda.blockIdx.x * PP
        L = lay.shape[0]
        S = tab.shape[1]
        F = lay[0, N_IN]
        for e in range(tid, HSIZE, NT):
            h1[e] = 0.0                 # columns past a layer's width stay zero
        if RES:
            load_resident(theta, lay, w1, tid)
        for p in range(tid, PP, NT):
            ls[p] = l[p0 + p] if p0 + p < N else 0.0
            for d in range(D):
                xs[p, d] = x[p0 + p, d] if p0 + p < N else 0.0
        cuda.syncthreads()
        for n in range(steps):
            t = t0 + n * h
            for st in range(S):
                # stage input x + h sum_j a_ij k_j at t + c_i h: features and tangents
                ts = float32(t + tab[0, st] * h)
                for p in range(tid, PP, NT):
                    stage_input(xs, ks, tab, st, h, p, xin)
                    features(h1, row_of(p, 0), xin, ts, n_freq, F, -1)
                    for m in range(D):
                        tangent_features(h1, row_of(p, 1 + m), xin, m, F)
                cuda.syncthreads()
                hidden_stack(h1, theta, lay, w1, tid)
                lo = L - 1
                narrow_linear(h1, lay[lo, N_IN], theta, lay[lo, W_OFF], lay[lo, B_OFF], red,
                              vo, tid)
                for p in range(tid, PP, NT):
                    div = float64(0.0)
                    r0 = row_of(p, 0)
                    for d in range(D):
                        ks[st, p, d] = vo[r0, d]
                        div += vo[row_of(p, 1 + d), d]        # (J e_d)_d
                    kl[st, p, 0] = -div                       # d/dt log p_t(x_t)
            # [x, l] <- [x, l] + h sum_i b_i [k_i, kl_i]
            for p in range(tid, PP, NT):
                for d in range(D):
                    xs[p, d] += h * increment(ks, tab, p, d)
                ls[p] += h * increment(kl, tab, p, 0)
            cuda.syncthreads()
        for p in range(tid, PP, NT):
            if p0 + p < N:
                l[p0 + p] = ls[p]
                for d in range(D):
                    x[p0 + p, d] = xs[p, d]

    return rk_logp


class CudaLikelihood(CudaSampler):
    """The network ``spec`` with weights ``theta`` on the device, ready to solve
    the augmented state of particles already on the device; the layouts of
    :class:`CudaSampler` with D + 1 rows per particle."""

    @staticmethod
    def group(spec):
        return spec.dim + 1

    def rows(self):
        return self.group(self.spec)

    def _use(self, cfg):
        self.cfg = cfg
        self.kernel = make_rk_logp(cfg, self.spec.dim, fastmath("sampler"),
                                   register_cap(cfg.NT, per_sm_key="logp_min_blocks_per_sm"),
                                   stage_regs("logp"), int(self.spec.kind),
                                   self.spec.x_freqs, int(TILES["mlp_kpass"]), self.spec.x_dirs)
        self._ready = False

    def integrate_logp(self, x, l, method="rk4", steps=100, t0=0.0, t1=1.0):
        """Solve the device arrays x (N, D) float32 and l (N,) float64 in place from
        t0 to t1.  Asynchronous."""
        N = x.shape[0]
        if N == 0:
            return x, l
        h = (float(t1) - float(t0)) / int(steps)
        self._launch(N, (self.theta, self.lay, self.tab(method), x, l, float(t0), h,
                         int(steps), self.spec.n_freq))
        return x, l


def cuda_solve_logp(theta, spec, x, l, method="rk4", steps=100, t0=0.0, t1=1.0):
    """(x(t1) (N, D) float32, l(t1) (N,) float64) from host arrays x, l at t0, in
    one launch: the GPU twin of ``likelihood.integrate_logp`` for the network
    (fixed-step methods)."""
    steps = check_steps(steps)
    tableau_array(method)
    cu = cuda_module()
    lik = CudaLikelihood(theta, spec)
    x_d = cu.to_device(np.ascontiguousarray(x, dtype=np.float32))
    l_d = cu.to_device(np.ascontiguousarray(l, dtype=np.float64))
    lik.integrate_logp(x_d, l_d, method, steps, t0, t1)
    return x_d.copy_to_host(), l_d.copy_to_host()
