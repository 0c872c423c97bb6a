"""The MLP evaluated by one thread block on PB rows: the building block of the
fused training kernel and of the fused samplers.

Dimension letters: PB rows per block, HP padded width, BK staged rows of W,
D data dimension (the width of the last layer).

Layout (``tiles.mlp_config``): the block keeps the current layer's activations
of its PB rows in ONE shared buffer ``hs`` (PB, HS).  A hidden layer

    z = h W + b   (PB, n_out),   a = sigma(z)

is a block-wide matrix product: W is streamed through shared memory in k-tiles
``ws`` (BK, HS), each thread accumulates its TM x TN register tile, and since the
block's registers hold the whole output, it overwrites ``hs`` in place after a
barrier.  The backward of the same layer, dh = dz W^T, is the same product with
W^T staged instead of W (``transposed``).  The last layer (n_out = D, narrow)
would leave most register tiles empty, so it has its own product
(:func:`narrow_linear`): each output is split over the threads along k and
summed in shared memory.

The functions are built by :func:`make_block_mlp` for one configuration:
numba needs the tile sizes as compile-time constants (shared and local array
shapes, unrolled register loops).
"""
import functools

from .device import cuda, device_functions


@functools.lru_cache(maxsize=None)
def make_block_mlp(cfg, D, fastmath):
    """Device functions for block layout ``cfg`` (``tiles.MlpConfig``) and output
    width D.  Returns a namespace with ``tile_matmul``, ``narrow_linear``,
    ``features`` and the compile-time constants."""
    cu = cuda()
    from numba import float32
    dev = device_functions(fastmath)
    time_feature = dev.time_feature
    PB, TM, TN, BK = cfg.PB, cfg.TM, cfg.TN, cfg.BK
    NRG, NCG, NT, HP = cfg.NRG, cfg.NCG, cfg.NT, cfg.HP
    NP = PB * D                          # outputs of the narrow last layer
    NS = max(1, NT // NP)                # threads summing one of them (k split)
    RED = max(NT, NP * NS)               # shared scratch for the narrow layer's partial sums

    @cu.jit(device=True, fastmath=fastmath)
    def tile_matmul(hs, n_k, n_c, theta, w_off, transposed, ws, acc, tid):
        """acc[i, j] = sum_k hs[rg + i NRG, k] M[k, cg + j NCG] for k < n_k, with
        M = W (n_k, n_c) when not transposed, else M = W^T for W (n_c, n_k); W is
        theta[w_off:] row-major.  Ends with a barrier: hs may then be overwritten."""
        rg = tid // NCG
        cg = tid % NCG
        a = cu.local.array(TM, float32)
        w = cu.local.array(TN, float32)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0.0
        for k0 in range(0, n_k, BK):
            # stage rows k0..k0+BK of M in ws, zero outside M
            for e in range(tid, BK * HP, NT):
                if transposed:
                    kk = e % BK          # consecutive threads walk along a row of W
                    c = e // BK
                else:
                    kk = e // HP         # consecutive threads walk along a row of W
                    c = e % HP
                k = k0 + kk
                val = float32(0.0)
                if k < n_k and c < n_c:
                    if transposed:
                        val = theta[w_off + c * n_k + k]
                    else:
                        val = theta[w_off + k * n_c + c]
                ws[kk, c] = val
            cu.syncthreads()
            kn = min(BK, n_k - k0)
            for kk in range(kn):
                for i in range(TM):
                    a[i] = hs[rg + i * NRG, k0 + kk]
                for j in range(TN):
                    w[j] = ws[kk, cg + j * NCG]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += a[i] * w[j]
            cu.syncthreads()

    @cu.jit(device=True, fastmath=fastmath)
    def narrow_linear(hs, n_in, theta, w_off, b_off, red, out, tid):
        """out[r, d] = sum_k hs[r, k] W[k, d] + b[d] for the last layer, W (n_in, D)
        = theta[w_off:], b = theta[b_off:].  Each of the PB D outputs is summed by
        NS threads over interleaved k, then combined in ``red``.  Ends with a barrier."""
        for q in range(tid, NP * NS, NT):
            p = q % NP
            s = q // NP
            r = p // D
            d = p % D
            part = float32(0.0)
            for k in range(s, n_in, NS):
                part += hs[r, k] * theta[w_off + k * D + d]
            red[q] = part
        cu.syncthreads()
        for p in range(tid, NP, NT):
            r = p // D
            d = p % D
            tot = theta[b_off + d]
            for s in range(NS):
                tot += red[s * NP + p]
            out[r, d] = tot
        cu.syncthreads()

    @cu.jit(device=True, fastmath=fastmath)
    def features(hs, r, x, t, n_freq):
        """hs[r, :F] = [x (D,), t, sin(pi 2^k t), cos(pi 2^k t) for k < n_freq]
        (``mlp.time_features``); x is a (D,) array."""
        for d in range(D):
            hs[r, d] = x[d]
        hs[r, D] = t
        for k in range(n_freq):
            sk, ck = time_feature(t, k)
            hs[r, D + 1 + 2 * k] = sk
            hs[r, D + 2 + 2 * k] = ck

    class NS_:
        pass

    ns = NS_()
    ns.tile_matmul, ns.narrow_linear, ns.features = tile_matmul, narrow_linear, features
    ns.RED, ns.cfg, ns.D = RED, cfg, D
    return ns
