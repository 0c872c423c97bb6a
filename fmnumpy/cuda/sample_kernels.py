"""The fused sampler: one launch integrates every particle through ALL time steps
of an explicit Runge-Kutta method (``solvers.rk_integrate``'s loop, on chip).

Dimension letters: N particles, D data dimension, S stages (at most SMAX).

Each block owns PB particles: their state x and the stage velocities k_i stay in
shared memory, and the network is evaluated by the block MLP (``block_mlp.py``),
whose weights stream through shared memory k-tile by k-tile.  The method is
data, the Butcher tableau ``tab`` (S + 2, S): row 0 = c, row 1 = b, rows 2.. = A
(``solvers.TABLEAUS``).  With step h:

    k_i = v(x + h sum_{j<i} a_ij k_j,  t + c_i h),     x <- x + h sum_i b_i k_i.
"""
import functools

from .block_mlp import make_block_mlp
from .device import cuda, device_functions
from .train_kernels import N_IN, N_OUT, W_OFF, B_OFF

SMAX = 4      # stages of the largest tableau (rk4)


@functools.lru_cache(maxsize=None)
def make_rk_mlp(cfg, D, fastmath):
    """The fused sampler kernel for block layout ``cfg`` and data dimension D."""
    cu = cuda()
    from numba import float32
    act = device_functions(fastmath).act
    mlp = make_block_mlp(cfg, D, fastmath)
    tile_matmul, narrow_linear, features = mlp.tile_matmul, mlp.narrow_linear, mlp.features
    PB, TM, TN, BK, NRG, NCG, NT, HS = cfg.PB, cfg.TM, cfg.TN, cfg.BK, cfg.NRG, cfg.NCG, \
        cfg.NT, cfg.HS
    RED = mlp.RED

    @cu.jit(fastmath=fastmath)
    def rk_mlp(theta, lay, tab, x, traj, t0, h, steps, every, n_rec, n_freq, kind):
        """Integrate x (N, D) in place from t0 with ``steps`` steps of size h; if
        n_rec > 0, traj[0] = x(t0) and traj[r] = x after r * every steps."""
        hs = cu.shared.array((PB, HS), float32)
        ws = cu.shared.array((BK, HS), float32)
        red = cu.shared.array(RED, float32)
        xs = cu.shared.array((PB, D), float32)          # particle states
        ks = cu.shared.array((SMAX, PB, D), float32)    # stage velocities
        acc = cu.local.array((TM, TN), float32)
        xin = cu.local.array(D, float32)
        tid = cu.threadIdx.x
        rg = tid // NCG
        cg = tid % NCG
        N = x.shape[0]
        row0 = cu.blockIdx.x * PB
        L = lay.shape[0]
        S = tab.shape[1]
        for r in range(tid, PB, NT):
            for d in range(D):
                xs[r, d] = x[row0 + r, d] if row0 + r < N else 0.0
                if n_rec > 0 and row0 + r < N:
                    traj[0, row0 + r, d] = xs[r, d]
        cu.syncthreads()
        for n in range(steps):
            t = t0 + n * h
            for st in range(S):
                # stage input x + h sum_j a_ij k_j at time t + c_i h, as features
                ts = float32(t + tab[0, st] * h)
                for r in range(tid, PB, NT):
                    for d in range(D):
                        v = float32(xs[r, d])
                        for j in range(st):
                            v += h * tab[2 + st, j] * ks[j, r, d]
                        xin[d] = v
                    features(hs, r, xin, ts, n_freq)
                cu.syncthreads()
                for l in range(L - 1):
                    n_in = lay[l, N_IN]
                    n_out = lay[l, N_OUT]
                    tile_matmul(hs, n_in, n_out, theta, lay[l, W_OFF], False, ws, acc, tid)
                    for i in range(TM):
                        r = rg + i * NRG
                        for j in range(TN):
                            col = cg + j * NCG
                            if col < n_out:
                                hs[r, col] = act(acc[i, j] + theta[lay[l, B_OFF] + col], kind)
                    cu.syncthreads()
                lo = L - 1
                narrow_linear(hs, lay[lo, N_IN], theta, lay[lo, W_OFF], lay[lo, B_OFF], red,
                              ks[st], tid)
            # x <- x + h sum_i b_i k_i
            for r in range(tid, PB, NT):
                for d in range(D):
                    inc = 0.0
                    for st in range(S):
                        inc += tab[1, st] * ks[st, r, d]
                    xs[r, d] += h * inc
                    if n_rec > 0 and (n + 1) % every == 0 and (n + 1) // every < n_rec \
                            and row0 + r < N:
                        traj[(n + 1) // every, row0 + r, d] = xs[r, d]
            cu.syncthreads()
        for r in range(tid, PB, NT):
            if row0 + r < N:
                for d in range(D):
                    x[row0 + r, d] = xs[r, d]

    return rk_mlp
