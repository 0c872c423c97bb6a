"""The training step on the GPU: four kernels on the flat buffers of ``mlp.py``.

Dimension letters: B batch, D data dimension, P parameters, S batch splits.

    forward_backward  per block of PB batch rows: draw (x0, x1, t) or read them,
                      xt, ut (paths.py), v = MLP(features) (mlp.mlp_forward),
                      L and dv (loss.py), then dz of every layer
                      (mlp.mlp_backward's dh = dz W^T, dz = dh sigma'(z)).
                      Writes each layer's input H_l and output gradient dZ_l.
    weight_grad       dW_l = H_l^T dZ_l, db_l = sum_B dZ_l (linear_backward), tiled,
                      one partial sum per batch split s: part[s] (P,)
    reduce_grad       dtheta = sum_s part[s], and ||dtheta||^2 (optim.grad_norm)
    adam_ema          clipping, Adam/AdamW (optim.adam_element), EMA (optim.ema_element)

Buffers (all on the device, kept between steps):
    state (5, P) float32   rows THETA, GRAD, M, V, EMA (same layout as theta)
    lay   (L, 8) int64     per layer: N_IN, N_OUT, W_OFF, B_OFF, H_OFF, Z_OFF,
                           DZ_OFF (offsets into theta and ``work``), T_START
                           (first tile of the layer in weight_grad's grid)
    work  float32          H_l (B, n_in), Z_l (B, n_out) of hidden layers, dZ_l (B, n_out)
    stats (C, 2) float64   per step of the chunk: loss, ||g||^2 (accumulated by atomics)
    sched (C, 4) float64   per step: lr, 1 - b1^k, 1 - b2^k, EMA decay
"""
import functools
import math

from fmnumpy.euclidean.cuda.mlp import make_block_mlp
from numba import cuda

from fmnumpy.euclidean.paths import COSINE, GAUSS, NOISY, SB, STRAIGHT
from fmnumpy.euclidean.cuda.device import device_functions, simulator, simulator_compat
from fmnumpy.euclidean.cuda.layout import (B_OFF, DZ_OFF, H_OFF, N_IN, N_OUT, T_START, W_OFF,
    Z_OFF)

THETA, GRAD, M, V, EMA = range(5)

# where x0, x1, t come from (forward_backward's data_mode)
DATA_ARRAYS = 0      # xin[c] = [x0 | x1 | t] (B, 2D + 1): given batches (tests, validation)
DATA_STREAM = 1      # xin[c] = x1 (B, D) uploaded per chunk; x0, t drawn on the device
DATA_2SPIRALS = 2    # everything drawn on the device (D = 2)


@functools.lru_cache(maxsize=None)
def make_forward_backward(cfg, D, fastmath, max_registers=0, stage_regs=16, kind=0,
                          path=STRAIGHT, x_freqs=0, kpass=4, labels=False, x_dirs="diagonals"):
    """The fused forward + loss + backward-data kernel for block layout ``cfg`` and
    activation code ``kind`` (a compile-time constant, as in the sampler);
    ``path``: the path's code (``paths.STRAIGHT``, ``COSINE``, ``SB``, ``GAUSS``: the
    elements ``paths.path_element``, ``cosine_element``, ``sb_element``,
    ``gaussian_element``), its parameter in the ``sigma_min`` argument (sigma_min,
    none, the bridge's sigma, the constant sigma) and the noise eps of SB and GAUSS
    in xin[c, i, 2D + 1 + d] of DATA_ARRAYS batches;
    ``x_freqs``: octaves of plane-wave features of xt (inputs: no backward);
    ``kpass``: see ``mlp.make_block_mlp``; ``labels``: a conditional network, the
    class of row i in xin[c, i, YC] of DATA_ARRAYS batches (after x0, x1, t and eps),
    a one-hot input (``mlp.label_features``);
    ``max_registers`` > 0 caps the registers per thread; launched with cfg.DYN
    bytes of dynamic shared memory."""
    from numba import float32, float64
    from numba.cuda.random import xoroshiro128p_normal_float32, xoroshiro128p_uniform_float32
    dev = device_functions(fastmath)
    act, dact, path_element = dev.act, dev.dact, dev.path_element
    gaussian_element, cosine_element, sb_element = (dev.gaussian_element, dev.cosine_element,
                                                    dev.sb_element)
    PATH = int(path)
    EPS = PATH in NOISY                       # eps in the batch (the host's noise)
    time_from_uniform = dev.time_from_uniform
    cfm_element, spiral_point = dev.cfm_element, dev.spiral_point
    mlp = make_block_mlp(cfg, D, fastmath, stage_regs, x_freqs, kpass=kpass, x_dirs=x_dirs)
    tile_matmul, narrow_linear, features = mlp.tile_matmul, mlp.narrow_linear, mlp.features
    col_of = mlp.col_of
    PB, TM, TN, BK, NRG, NCG, NT, HS = cfg.PB, cfg.TM, cfg.TN, cfg.BK, cfg.NRG, cfg.NCG, \
        cfg.NT, cfg.HS
    RED, HSTATIC, WSTATIC = mlp.RED, mlp.HSTATIC, mlp.WSTATIC
    DYN = cfg.DYN > 0
    DK = (D + BK - 1) // BK * BK
    LABELS = bool(labels)
    YC = 2 * D + 1 + (D if EPS else 0)        # the label column of xin
    KIND = int(kind)

    cap = {"max_registers": max_registers} if max_registers and not simulator() else {}

    @cuda.jit(fastmath=fastmath, **cap)
    def forward_backward(state, lay, work, rng, xin, stats, c, B, n_freq, sigma_min,
                         time_power, data_mode):
        hst = cuda.shared.array(HSTATIC, float32, alignment=16)  # activations / gradients
        wst = cuda.shared.array(WSTATIC, float32, alignment=16)  # staged k-tile of W or W^T
        dyn = cuda.shared.array(0, float32, alignment=16)        # hs when DYN
        h1 = dyn if DYN else hst
        w1 = wst
        us = cuda.shared.array((PB, D), float32)       # target velocity ut
        vs = cuda.shared.array((PB, D), float32)       # prediction v
        red = cuda.shared.array(RED, float32)
        red64 = cuda.shared.array(NT, float64)
        xt = cuda.local.array(D, float32)
        tid = cuda.threadIdx.x
        rg = tid // NCG
        cg = tid % NCG
        row0 = cuda.blockIdx.x * PB
        theta = state[THETA]
        L = lay.shape[0]
        F = lay[0, N_IN]

        # -- the batch rows: (x0, x1, t) -> xt, ut -> input features X = H_0 ----------
        for r in range(tid, PB, NT):
            i = row0 + r
            for f in range(HS):
                h1[r * HS + f] = 0.0
            for d in range(D):
                us[r, d] = 0.0
            if i < B:
                p1x = 0.0
                p1y = 0.0
                if data_mode == DATA_ARRAYS:
                    t = xin[c, i, 2 * D]
                else:
                    t = float32(time_from_uniform(xoroshiro128p_uniform_float32(rng, i),
                                                  time_power))
                if data_mode == DATA_2SPIRALS:
                    u_s = xoroshiro128p_uniform_float32(rng, i)
                    u_x = xoroshiro128p_uniform_float32(rng, i)
                    u_y = xoroshiro128p_uniform_float32(rng, i)
                    u_arm = xoroshiro128p_uniform_float32(rng, i)
                    n_x = xoroshiro128p_normal_float32(rng, i)
                    n_y = xoroshiro128p_normal_float32(rng, i)
                    p1x, p1y = spiral_point(u_s, u_x, u_y, u_arm, n_x, n_y)
                for d in range(D):
                    if data_mode == DATA_ARRAYS:
                        x0 = xin[c, i, d]
                        x1 = xin[c, i, D + d]
                    else:
                        x0 = xoroshiro128p_normal_float32(rng, i)
                        if data_mode == DATA_STREAM:
                            x1 = xin[c, i, d]
                        elif d == 0:
                            x1 = float32(p1x)
                        else:
                            x1 = float32(p1y)
                    if PATH == GAUSS:
                        xtd, utd = gaussian_element(x0, x1, t, sigma_min,
                                                    xin[c, i, 2 * D + 1 + d])
                    elif PATH == SB:
                        xtd, utd = sb_element(x0, x1, t, sigma_min, xin[c, i, 2 * D + 1 + d])
                    elif PATH == COSINE:
                        xtd, utd = cosine_element(x0, x1, t)
                    else:
                        xtd, utd = path_element(x0, x1, t, sigma_min)
                    xt[d] = xtd
                    us[r, d] = utd
                y = -1
                if LABELS and data_mode == DATA_ARRAYS:
                    y = int(xin[c, i, YC])
                features(h1, r, xt, t, n_freq, F, y)
                for f in range(F):
                    work[lay[0, H_OFF] + i * F + f] = h1[r * HS + f]
        cuda.syncthreads()

        # -- forward through the hidden layers: z = h W + b, a = sigma(z) ------------
        for l in range(L - 1):
            n_in = lay[l, N_IN]
            n_out = lay[l, N_OUT]
            tile_matmul(h1, n_in, n_out, theta, lay[l, W_OFF], False, w1, tid)
            for i in range(TM):
                r = rg + i * NRG
                row = row0 + r
                for j in range(TN):
                    col = col_of(cg, j, NCG, TN)
                    if col < n_out:
                        z = h1[r * HS + col] + theta[lay[l, B_OFF] + col]
                        a = act(z, KIND)
                        h1[r * HS + col] = a
                        if row < B:
                            work[lay[l, Z_OFF] + row * n_out + col] = z
                            work[lay[l + 1, H_OFF] + row * n_out + col] = a
                    else:
                        h1[r * HS + col] = 0.0        # zero up to HP: whole k-tiles read zeros
            cuda.syncthreads()

        # -- last layer, loss L = sum (v - ut)^2 / (B D), dv = dL/dv -----------------
        lo = L - 1
        narrow_linear(h1, lay[lo, N_IN], theta, lay[lo, W_OFF], lay[lo, B_OFF], red, vs, tid)
        cdv = 2.0 / (B * D)
        lsum = 0.0
        for p in range(tid, PB * DK, NT):         # dv, then zeros up to a whole k-tile
            r = p // DK
            d = p % DK
            row = row0 + r
            dv = float32(0.0)
            if row < B and d < D:
                sq, g = cfm_element(vs[r, d], us[r, d], cdv)
                lsum += sq
                dv = g
                work[lay[lo, DZ_OFF] + row * D + d] = dv
            h1[r * HS + d] = dv
        red64[tid] = lsum
        cuda.syncthreads()
        if tid == 0:
            tot = 0.0
            for q in range(NT):
                tot += red64[q]
            cuda.atomic.add(stats, (c, 0), tot / (B * D))

        # -- backward: dh = dz W^T, dz_prev = dh sigma'(z_prev), down to layer 1 ------
        for l in range(L - 1, 0, -1):
            n_in = lay[l, N_IN]
            n_out = lay[l, N_OUT]
            tile_matmul(h1, n_out, n_in, theta, lay[l, W_OFF], True, w1, tid)
            for i in range(TM):
                r = rg + i * NRG
                row = row0 + r
                for j in range(TN):
                    col = col_of(cg, j, NCG, TN)
                    dz = float32(0.0)
                    if col < n_in:
                        if row < B:
                            zp = work[lay[l - 1, Z_OFF] + row * n_in + col]
                            dz = h1[r * HS + col] * dact(zp, KIND)
                            work[lay[l - 1, DZ_OFF] + row * n_in + col] = dz
                    h1[r * HS + col] = dz
            cuda.syncthreads()

    return forward_backward


@functools.lru_cache(maxsize=None)
def make_weight_grad(wg, fastmath):
    """Split-K GEMM dW_l = H_l^T dZ_l (and db_l = column sums of dZ_l) for all
    layers in one launch: grid (tiles of all layers, batch splits).

    Thread (rg, cg) owns rows owned_columns(rg, i, NRG, TM) of the (BM, BN) tile
    and columns owned_columns(cg, j, NCG, TN): quads of adjacent ones, so the
    register tiles load from shared memory 16 bytes at a time."""
    import numpy as np
    from numba import float32, uint64
    from fmnumpy.euclidean.cuda.mlp import owned_columns
    simulator_compat()
    BM, BN, TM, TN, BK, NRG, NCG, NT = wg.BM, wg.BN, wg.TM, wg.TN, wg.BK, wg.NRG, wg.NCG, wg.NT
    col_of = cuda.jit(device=True)(owned_columns)
    UROW = tuple(np.uint64(owned_columns(0, i, NRG, TM)) for i in range(TM))
    UCOL = tuple(np.uint64(owned_columns(0, j, NCG, TN)) for j in range(TN))
    UR = np.uint64(4 if TM % 4 == 0 else 1)
    UC = np.uint64(4 if TN % 4 == 0 else 1)
    UBM, UBN = np.uint64(BM), np.uint64(BN)
    HSZ, DSZ = BK * BM, BK * BN
    NLH, NLD = -(-HSZ // NT), -(-DSZ // NT)       # tile elements per thread

    @cuda.jit(device=True, fastmath=fastmath)
    def mac(h1, d1, ka, kb, a, g, acc):
        """acc += outer(a, g) for one batch row: a[i] = h1[ka + UROW[i]],
        g[j] = d1[kb + UCOL[j]]."""
        for i in range(TM):
            a[i] = h1[ka + UROW[i]]
        for j in range(TN):
            g[j] = d1[kb + UCOL[j]]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += a[i] * g[j]

    @cuda.jit(device=True, fastmath=fastmath)
    def fetch(hbuf, dbuf, work, h_off, dz_off, n_in, n_out, a0, j0, i0, i_hi, tid):
        """Registers <- batch rows i0..i0+BK of H (columns a0..a0+BM) and of dZ
        (columns j0..j0+BN), zero outside; element e = tid + q NT of each tile."""
        for q in range(NLH):
            e = tid + q * NT
            i = i0 + e // BM
            col = a0 + e % BM
            val = float32(0.0)
            if e < HSZ and i < i_hi and col < n_in:
                val = work[h_off + i * n_in + col]
            hbuf[q] = val
        for q in range(NLD):
            e = tid + q * NT
            i = i0 + e // BN
            col = j0 + e % BN
            val = float32(0.0)
            if e < DSZ and i < i_hi and col < n_out:
                val = work[dz_off + i * n_out + col]
            dbuf[q] = val

    @cuda.jit(fastmath=fastmath)
    def weight_grad(lay, work, part, B, rows_per_split):
        h1 = cuda.shared.array(HSZ, float32, alignment=16)   # H (BK, BM): rows i, columns a0..
        d1 = cuda.shared.array(DSZ, float32, alignment=16)   # dZ (BK, BN): rows i, columns j0..
        acc = cuda.local.array((TM, TN), float32)
        a = cuda.local.array(TM, float32)
        g = cuda.local.array(TN, float32)
        hbuf = cuda.local.array(NLH, float32)
        dbuf = cuda.local.array(NLD, float32)
        tid = cuda.threadIdx.x
        rg = tid // NCG
        cg = tid % NCG
        L = lay.shape[0]
        tile = cuda.blockIdx.x
        s = cuda.blockIdx.y
        l = 0
        while l + 1 < L and lay[l + 1, T_START] <= tile:
            l += 1
        n_in = lay[l, N_IN]
        n_out = lay[l, N_OUT]
        n_ct = (n_out + BN - 1) // BN
        a0 = (tile - lay[l, T_START]) // n_ct * BM
        j0 = (tile - lay[l, T_START]) % n_ct * BN
        h_off = lay[l, H_OFF]
        dz_off = lay[l, DZ_OFF]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0.0
        bsum = float32(0.0)                           # db partial of column j0 + tid
        i_lo = s * rows_per_split
        i_hi = min(B, i_lo + rows_per_split)
        n_it = (i_hi - i_lo + BK - 1) // BK
        fetch(hbuf, dbuf, work, h_off, dz_off, n_in, n_out, a0, j0, i_lo, i_hi, tid)
        for it in range(n_it):
            for q in range(NLH):                 # stage the k-tile fetched last time
                if tid + q * NT < HSZ:
                    h1[tid + q * NT] = hbuf[q]
            for q in range(NLD):
                if tid + q * NT < DSZ:
                    d1[tid + q * NT] = dbuf[q]
            cuda.syncthreads()
            if it + 1 < n_it:                    # loads in flight during the products
                fetch(hbuf, dbuf, work, h_off, dz_off, n_in, n_out, a0, j0,
                      i_lo + (it + 1) * BK, i_hi, tid)
            ka = uint64(rg) * UR
            kb = uint64(cg) * UC
            for kk in range(BK):
                mac(h1, d1, ka, kb, a, g, acc)
                ka += UBM
                kb += UBN
            if a0 == 0 and tid < BN:
                for kk in range(BK):
                    bsum += d1[kk * BN + tid]
            cuda.syncthreads()
        w_off = lay[l, W_OFF]
        for i in range(TM):
            row = a0 + col_of(rg, i, NRG, TM)
            for j in range(TN):
                col = j0 + col_of(cg, j, NCG, TN)
                if row < n_in and col < n_out:
                    part[s, w_off + row * n_out + col] = acc[i, j]
        if a0 == 0 and tid < BN and j0 + tid < n_out:
            part[s, lay[l, B_OFF] + j0 + tid] = bsum

    return weight_grad


@functools.lru_cache(maxsize=None)
def make_reduce_grad(NT, fastmath):
    """dtheta = sum_s part[s] and stats[c, 1] += ||dtheta||^2 (float64)."""
    from numba import float64

    @cuda.jit(fastmath=fastmath)
    def reduce_grad(part, state, stats, c):
        red64 = cuda.shared.array(NT, float64)
        tid = cuda.threadIdx.x
        S, P = part.shape
        sq = 0.0
        for p in range(cuda.grid(1), P, cuda.gridsize(1)):
            g = part[0, p]
            for s in range(1, S):
                g += part[s, p]
            state[GRAD, p] = g
            sq += float64(g) * float64(g)
        red64[tid] = sq
        cuda.syncthreads()
        if tid == 0:
            tot = 0.0
            for q in range(NT):
                tot += red64[q]
            cuda.atomic.add(stats, (c, 1), tot)

    return reduce_grad


@functools.lru_cache(maxsize=None)
def make_adam_ema(fastmath):
    """Clip, Adam/AdamW step, EMA (optim.clip_grad_norm, adam_update, ema_update).

    A step whose loss or gradient norm is not finite changes nothing and sets
    ``bad[0]`` to its 1-based step number; once set, no later step changes
    anything, so the state stays at the last good weights (like step.train_step).
    """
    from numba import float32
    dev = device_functions(fastmath)
    adam_element, ema_element, clip_scale = dev.adam_element, dev.ema_element, dev.clip_scale

    @cuda.jit(fastmath=fastmath)
    def adam_ema(state, stats, sched, c, k, bad, b1, b2, eps, wd, decoupled, clip):
        loss = stats[c, 0]
        gnorm = math.sqrt(stats[c, 1])
        first = cuda.grid(1) == 0
        if bad[0] == 0:
            if not (math.isfinite(loss) and math.isfinite(gnorm)):
                if first:
                    bad[0] = k
            else:
                scale = clip_scale(gnorm, clip)
                lr = sched[c, 0]
                bc1 = sched[c, 1]
                bc2 = sched[c, 2]
                decay = sched[c, 3]
                P = state.shape[1]
                for p in range(cuda.grid(1), P, cuda.gridsize(1)):
                    g = state[GRAD, p]
                    if scale != 1.0:
                        g = float32(g * scale)
                    th, m, v = adam_element(state[THETA, p], g, state[M, p], state[V, p],
                                            lr, b1, b2, eps, wd, decoupled, bc1, bc2)
                    state[THETA, p] = th
                    state[M, p] = m
                    state[V, p] = v
                    state[EMA, p] = ema_element(state[EMA, p], state[THETA, p], decay)

    return adam_ema
