"""The MLP evaluated by one thread block on PB rows: the building block of the
fused training kernel and of the fused samplers.

Dimension letters: PB rows per block, HP padded width, BK staged rows of W,
D data dimension (the width of the last layer).

Layout (``tiles.mlp_config``): the block keeps the current layer's activations
of its PB rows in ONE shared buffer ``hs`` (PB, HS).  A hidden layer

    z = h W + b   (PB, n_out),   a = sigma(z)

is a block-wide matrix product (:func:`tile_matmul`): W is streamed through
shared memory in k-tiles ``ws`` (BK, WS), each thread accumulates its TM x TN
register tile, and since the block's registers hold the whole output, it
overwrites ``hs`` after the last barrier; the caller's epilogue (bias,
activation) then reads back its own elements.  The backward of the same layer,
dh = dz W^T, is the same product with W^T staged instead of W (``transposed``).
The last layer (n_out = D, narrow) would leave most register tiles empty, so it
has its own product (:func:`narrow_linear`): each output is split over the
threads along k and summed in shared memory.

Which elements a thread owns is chosen for the shared-memory banks: rows
rg + i NRG (the warp's row groups hit different banks), columns in quads of 4
adjacent ones (one 16-byte load), quad q at q * 4 NCG (:func:`owned_columns`).
The k-loop runs whole tiles of BK: the columns of ``hs`` past a layer's width
are kept at zero, as are the rows of ``ws`` past W.  W goes global memory ->
registers -> ``ws``, at most ``stage_regs`` values per thread at a time (more
would be spilled to memory and serialise the loads); when a whole k-tile fits,
the next one is loaded while the current one is multiplied.

Resident weights (sampler, ``cfg.RES``): when every hidden layer's W fits in
shared memory, ``ws`` holds them all (:func:`load_resident`, once per kernel) and
:func:`resident_matmul` runs the same k-loop with no staging and one barrier.
Dynamic shared memory (``cfg.DYN`` bytes, may exceed 48 KB): hs is the dynamic
buffer; ws stays a static array (a W load with a static base is merged into
16-byte loads; from the dynamic buffer the compiler did not merge them).

The functions are built by :func:`make_block_mlp` for one configuration:
numba needs the tile sizes as compile-time constants (shared and local array
shapes, unrolled register loops).
"""
import functools

from numba import cuda

from fmnumpy.euclidean.cuda.device import device_functions, simulator_compat
from fmnumpy.euclidean.cuda.layout import B_OFF, N_IN, N_OUT, W_OFF


def owned_columns(cg, j, NCG, TN):
    """Column of the j-th register column of column group cg (plain Python and
    device code): quads of 4 adjacent columns when TN is a multiple of 4, else
    columns cg + j NCG."""
    if TN % 4 == 0:
        return (j // 4) * (4 * NCG) + cg * 4 + j % 4
    return cg + j * NCG


def group_row(p, s, NRG, G):
    """Row of member s < G of particle p (plain Python and device code): a thread
    owns rows rg + i NRG, i < TM, and particle p = rg + q NRG gets i = q G + s, so
    the thread that owns a particle's row owns all G of them (TM % G == 0)."""
    return p % NRG + ((p // NRG) * G + s) * NRG


@functools.lru_cache(maxsize=None)
def make_block_mlp(cfg, D, fastmath, stage_regs=16, x_freqs=0, group=1, kind=0, kpass=4,
                   x_dirs="diagonals"):
    """Device functions for block layout ``cfg`` (``tiles.MlpConfig``) and output
    width D; ``stage_regs`` bounds the registers a thread stages W through;
    ``x_freqs`` the octaves K of plane-wave features of x (``mlp.input_features``),
    compile-time constants like the directions ``mlp.feature_directions(D, x_dirs)``.

    ``group`` G > 1: each particle has G rows, row s = 0 the forward pass and rows
    s = 1..G-1 its tangents (``row_of``; the exact divergence, ``cuda/likelihood.py``):
    :func:`hidden_stack` applies the tangent rule da = sigma'(z) dz to them and
    :func:`narrow_linear` gives them no bias.  ``kind``: the activation of
    :func:`hidden_stack`.  ``kpass``: k per pass of the products' inner loop, 4
    (the loads of four k pair up into 16-byte loads), 2 or 1 (fewer live registers:
    fewer spills where the register cap is tight, bench/results/ptxas.md).
    Returns a namespace with ``tile_matmul``, ``narrow_linear``, ``features``,
    ``tangent_features``, ``hidden_stack``, ``row_of``, ``col_of`` and the sizes of
    the shared buffers (HSIZE, WSIZE, RED)."""
    import numpy as np
    from numba import float32, uint64

    from fmnumpy.nn.mlp import feature_directions
    simulator_compat()
    dev = device_functions(fastmath)
    time_feature, wave_tangent, act, dact = dev.time_feature, dev.wave_tangent, dev.act, dev.dact
    gap_feature = dev.gap_feature
    G, KIND, K = int(group), int(kind), int(x_freqs)
    if cfg.TM % G:
        raise ValueError(f"TM = {cfg.TM} is not a multiple of the group of {G} rows")
    DIRS = feature_directions(D, x_dirs).astype(np.float32) if K else np.zeros((1, D), np.float32)
    J = DIRS.shape[0] if K else 0        # plane-wave directions (J, D), constants
    E = D + 2 * K * J                    # first column after x and its plane waves
    PB, TM, TN, BK, RES = cfg.PB, cfg.TM, cfg.TN, cfg.BK, cfg.RES
    NRG, NCG, NT, HP, HS = cfg.NRG, cfg.NCG, cfg.NT, cfg.HP, cfg.HS
    WS = cfg.WS                          # ws row length (HP + 4: transposed staging hits
                                         # all banks; HP when W is resident)
    HSIZE, WSIZE = PB * HS, cfg.WROWS * WS    # flat sizes of the shared buffers hs, ws
    NP = PB * D                          # outputs of the narrow last layer
    NS = max(1, NT // NP)                # threads summing one of them (k split)
    RED = max(NT, NP * NS)               # shared scratch for the narrow layer's partial sums
    col_of = cuda.jit(device=True)(owned_columns)
    NLOAD = -(-BK * HP // NT)            # elements of a W k-tile per thread
    U0, U1, U2, U3 = (np.uint64(q) for q in (0, 1, 2, 3))
    QCH = min(NLOAD, stage_regs)         # ... staged QCH at a time (registers, not memory)
    NCH = -(-NLOAD // QCH)               # chunks per k-tile; 1: prefetch the next k-tile

    # Hot-loop indexing: flat views and unsigned offsets, so that every load is a
    # register base plus a compile-time constant (signed indices would add
    # negative-index checks, and a product of int64 and uint64 is a float in numba).
    URS = np.uint64(NRG * HS)            # flat distance between a thread's rows in hs
    UWS = np.uint64(WS)                  # flat distance between rows of ws
    UCOL = tuple(np.uint64(owned_columns(0, j, NCG, TN)) for j in range(TN))
    UC = np.uint64(4 if TN % 4 == 0 else 1)    # column step between column groups
    UWS2, UWS3 = (np.uint64(q * WS) for q in (2, 3))

    @cuda.jit(device=True, fastmath=fastmath)
    def mac(h1, w1, ka, kb, a, w, acc):
        """acc += outer(a, w) for one k: a[i] = h1[ka + i URS], w[j] = w1[kb + UCOL[j]]."""
        for i in range(TM):
            a[i] = h1[ka + uint64(i) * URS]
        for j in range(TN):
            w[j] = w1[kb + UCOL[j]]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += a[i] * w[j]

    @cuda.jit(device=True, fastmath=fastmath)
    def mac4(h1, w1, ka, kb, a, w, acc):
        """:func:`mac` for the four k at hs[.., ka..ka+3] and ws rows kb, kb + WS, ...
        in one pass, so the loads of a row can pair up."""
        mac(h1, w1, ka, kb, a, w, acc)
        mac(h1, w1, ka + U1, kb + UWS, a, w, acc)
        mac(h1, w1, ka + U2, kb + UWS2, a, w, acc)
        mac(h1, w1, ka + U3, kb + UWS3, a, w, acc)

    KP = int(kpass)
    if KP not in (1, 2, 4) or BK % KP:
        raise ValueError(f"kpass must be 1, 2 or 4 and divide BK = {BK}, got {kpass}")
    UKP, UWSKP = np.uint64(KP), np.uint64(KP * WS)

    @cuda.jit(device=True, fastmath=fastmath)
    def mac_pass(h1, w1, ka, kb, a, w, acc):
        """KP k of the product in one pass: :func:`mac4`, two :func:`mac` or one."""
        if KP == 4:
            mac4(h1, w1, ka, kb, a, w, acc)
        elif KP == 2:
            mac(h1, w1, ka, kb, a, w, acc)
            mac(h1, w1, ka + U1, kb + UWS, a, w, acc)
        else:
            mac(h1, w1, ka, kb, a, w, acc)

    @cuda.jit(device=True, fastmath=fastmath)
    def store_tile(h1, acc, rg, cg):
        """hs[rows_i, cols_j] <- acc[i, j]: the thread's TM x TN register tile back
        into the activation buffer (rows rg + i NRG, columns :func:`owned_columns`)."""
        ka = uint64(rg * HS)
        kb = uint64(cg) * UC
        for i in range(TM):
            for j in range(TN):
                h1[ka + uint64(i) * URS + kb + UCOL[j]] = acc[i, j]

    # Staging W: thread tid holds elements e = tid + (qc QCH + q) NT (q < QCH) of the
    # (BK, HP) k-tile of M in chunk qc.  When NT and HP divide each other (and the
    # tile and chunks divide evenly) the shared position is sbase(tid) + qc * a
    # constant + a constant per q, and a whole tile inside W (n_c == HP) is read
    # from one base address per thread: W's rows k0.. are contiguous (not
    # transposed), or each thread walks down a column strip of W (transposed).
    FAST = ((BK * HP) % NT == 0 and NT % BK == 0 and NLOAD % QCH == 0
            and (NT % HP == 0 or (HP % NT == 0 and (QCH * NT) % HP == 0)))
    if HP % NT == 0:
        SOFF_N = tuple(np.uint64((q * NT) // HP * WS + (q * NT) % HP) for q in range(QCH))
    else:
        SOFF_N = tuple(np.uint64((q * NT) // HP * WS) for q in range(QCH))
    SOFF_T = tuple(np.uint64(q * (NT // BK)) if FAST else 0 for q in range(QCH))
    GOFF_N = tuple(np.uint64(q * NT) for q in range(QCH))
    UQN = np.uint64(QCH * NT)                            # global step per chunk (rows of W)
    USN = np.uint64((QCH * NT) // HP * WS)               # shared step per chunk
    UST = np.uint64(QCH * (NT // BK)) if FAST else U0    # shared step per chunk, W^T

    @cuda.jit(device=True, fastmath=fastmath)
    def fetch(buf, theta, w_off, n_k, n_c, k0, transposed, tid, qc):
        """Load chunk qc of rows k0..k0+BK of M (W, or W^T when transposed) into this
        thread's registers ``buf``, zero outside M.  The QCH loads are independent,
        so they are in flight together."""
        if FAST and n_c == HP and k0 + BK <= n_k:
            if transposed:              # W[c, k0 + kk]: kk = tid % BK, c = tid // BK + q NT/BK
                gs = uint64((NT // BK) * n_k)
                g = uint64(w_off + (tid // BK) * n_k + k0 + tid % BK) + uint64(qc * QCH) * gs
                for q in range(QCH):
                    buf[q] = theta[g]
                    g += gs
            else:                       # rows k0.. of W are contiguous: element e at e
                g = uint64(w_off + k0 * n_c + tid) + uint64(qc) * UQN
                for q in range(QCH):
                    buf[q] = theta[g + GOFF_N[q]]
            return
        for q in range(QCH):
            e = tid + (qc * QCH + q) * NT
            if transposed:
                kk = e % BK              # consecutive threads walk along a row of W
                c = e // BK
            else:
                kk = e // HP             # consecutive threads walk along a row of W
                c = e % HP
            k = k0 + kk
            val = float32(0.0)
            if e < BK * HP and k < n_k and c < n_c:
                if transposed:
                    val = theta[w_off + c * n_k + k]
                else:
                    val = theta[w_off + k * n_c + c]
            buf[q] = val

    @cuda.jit(device=True, fastmath=fastmath)
    def stage(buf, w1, transposed, tid, qc):
        """ws <- chunk qc of the tile, held in ``buf`` (see :func:`fetch`)."""
        if FAST:
            if transposed:
                sb = uint64((tid % BK) * WS + tid // BK) + uint64(qc) * UST
                for q in range(QCH):
                    w1[sb + SOFF_T[q]] = buf[q]
            else:
                sb = uint64((tid // HP) * WS + tid % HP) + uint64(qc) * USN
                for q in range(QCH):
                    w1[sb + SOFF_N[q]] = buf[q]
            return
        for q in range(QCH):
            e = tid + (qc * QCH + q) * NT
            if e < BK * HP:
                if transposed:
                    w1[(e % BK) * WS + e // BK] = buf[q]
                else:
                    w1[(e // HP) * WS + e % HP] = buf[q]

    @cuda.jit(device=True, fastmath=fastmath)
    def tile_matmul(h1, n_k, n_c, theta, w_off, transposed, w1, tid):
        """hs[rows_i, cols_j] <- sum_k hs[rows_i, k] M[k, cols_j] for k < n_k, with
        M = W (n_k, n_c) when not transposed, else M = W^T for W (n_c, n_k); W is
        theta[w_off:] row-major.  h1, w1: the shared buffers hs (PB, HS) and ws
        (BK, WS), flat.  hs[:, n_k:HP] must be zero on entry; on return every
        column < HP holds the product (the caller's epilogue reads back its own
        elements, so it needs no barrier).  The next k-tile of M is loaded into
        registers while the current one is multiplied."""
        rg = tid // NCG
        cg = tid % NCG
        acc = cuda.local.array((TM, TN), float32)
        a = cuda.local.array(TM, float32)
        w = cuda.local.array(TN, float32)
        buf = cuda.local.array(QCH, float32)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0.0
        n_kt = (n_k + BK - 1) // BK
        if NCH == 1:
            fetch(buf, theta, w_off, n_k, n_c, 0, transposed, tid, 0)
        for kt in range(n_kt):
            k0 = kt * BK                 # (a product: the compiler sees k0 % BK == 0)
            if NCH == 1:                 # the tile fetched during the last products
                stage(buf, w1, transposed, tid, 0)
            else:                        # large tiles: QCH registers at a time
                for qc in range(NCH):
                    fetch(buf, theta, w_off, n_k, n_c, k0, transposed, tid, qc)
                    stage(buf, w1, transposed, tid, qc)
            cuda.syncthreads()
            if NCH == 1 and kt + 1 < n_kt:
                fetch(buf, theta, w_off, n_k, n_c, k0 + BK, transposed, tid, 0)
            ka = uint64(rg * HS + k0)    # hs[rg, k0]
            kb = uint64(cg) * UC         # ws[0, cols_0]
            for kq in range(BK // KP):   # KP k per pass
                mac_pass(h1, w1, ka, kb, a, w, acc)
                ka += UKP
                kb += UWSKP
            cuda.syncthreads()
        store_tile(h1, acc, rg, cg)      # the block's registers hold the whole product

    @cuda.jit(device=True, fastmath=fastmath)
    def load_resident(theta, lay, w1, tid):
        """ws <- W_l of every hidden layer l < L - 1 (``lay``: layout.layer_table),
        one after another, each padded with zero rows to whole k-tiles and zero
        columns to HP; the caller's next barrier publishes them."""
        row0 = 0
        for l in range(lay.shape[0] - 1):
            n_in = lay[l, N_IN]
            n_out = lay[l, N_OUT]
            w_off = lay[l, W_OFF]
            n_r = (n_in + BK - 1) // BK * BK
            for e in range(tid, n_r * HP, NT):
                k = e // HP
                c = e % HP
                val = float32(0.0)
                if k < n_in and c < n_out:
                    val = theta[w_off + k * n_out + c]
                w1[(row0 + k) * WS + c] = val
            row0 += n_r

    @cuda.jit(device=True, fastmath=fastmath)
    def resident_matmul(h1, n_k, w1, w_row, tid):
        """hs[rows_i, cols_j] <- sum_k hs[rows_i, k] W[k, cols_j] for k < n_k, with W
        resident in ws from row ``w_row`` (:func:`load_resident`): the product of
        :func:`tile_matmul` without staging, one barrier before hs is overwritten."""
        rg = tid // NCG
        cg = tid % NCG
        acc = cuda.local.array((TM, TN), float32)
        a = cuda.local.array(TM, float32)
        w = cuda.local.array(TN, float32)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0.0
        kb0 = uint64(cg) * UC + uint64(w_row) * UWS    # ws[w_row, cols_0]
        for kq in range((n_k + BK - 1) // BK * (BK // KP)):  # KP k at a time, whole k-tiles
            k0 = kq * KP                 # addresses from k0, not carried from the last
            ka = uint64(rg * HS + k0)    # pass: the compiler sees their alignment and
            kb = kb0 + uint64(k0) * UWS  # merges the loads of ws (16-byte)
            mac_pass(h1, w1, ka, kb, a, w, acc)
        cuda.syncthreads()               # every thread has read hs
        store_tile(h1, acc, rg, cg)

    @cuda.jit(device=True, fastmath=fastmath)
    def narrow_linear(h1, n_in, theta, w_off, b_off, red, out, tid):
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
                part += h1[r * HS + k] * theta[w_off + k * D + d]
            red[q] = part
        cuda.syncthreads()
        for p in range(tid, NP, NT):
            r = p // D
            d = p % D
            tot = theta[b_off + d]
            if G > 1 and (r // NRG) % G != 0:
                tot = float32(0.0)       # a tangent row: dv = dh W, no bias
            for s in range(NS):
                tot += red[s * NP + p]
            out[r, d] = tot
        cuda.syncthreads()

    @cuda.jit(device=True, fastmath=fastmath)
    def hidden_stack(h1, theta, lay, w1, tid):
        """hs <- the last hidden layer's activations: z = h W + b, a = sigma(z) for
        l < L - 1, and with G > 1 the tangents da = sigma'(z) * (dh W) in each
        particle's rows s > 0 (no bias; sigma'(z) from its row 0, held by the same
        thread).  Resident W (cfg.RES) or streamed k-tiles.  Ends with a barrier."""
        rg = tid // NCG
        cg = tid % NCG
        w_row = 0                       # first row of W_l in the resident ws
        for l in range(lay.shape[0] - 1):
            n_in = lay[l, N_IN]
            n_out = lay[l, N_OUT]
            b_off = lay[l, B_OFF]
            if RES:
                resident_matmul(h1, n_in, w1, w_row, tid)
                w_row += (n_in + BK - 1) // BK * BK
            else:
                tile_matmul(h1, n_in, n_out, theta, lay[l, W_OFF], False, w1, tid)
            if G == 1:
                for i in range(TM):
                    r = rg + i * NRG
                    for j in range(TN):
                        col = col_of(cg, j, NCG, TN)
                        e = r * HS + col        # hs[r, col]
                        if col < n_out:
                            h1[e] = act(h1[e] + theta[b_off + col], KIND)
                        else:
                            h1[e] = 0.0         # whole k-tiles read zeros
            else:
                for q in range(TM // G):
                    e0 = (rg + q * G * NRG) * HS     # row 0 of the thread's q-th particle
                    for j in range(TN):
                        col = col_of(cg, j, NCG, TN)
                        if col < n_out:
                            z = h1[e0 + col] + theta[b_off + col]
                            sp = dact(z, KIND)
                            for s in range(1, G):
                                h1[e0 + s * NRG * HS + col] *= sp
                            h1[e0 + col] = act(z, KIND)
                        else:
                            for s in range(G):
                                h1[e0 + s * NRG * HS + col] = 0.0
            cuda.syncthreads()

    @cuda.jit(device=True, fastmath=fastmath)
    def projection(x, j):
        """p_j = b_j . x, the argument of the plane waves along direction j."""
        p = float32(0.0)
        for d in range(D):
            p += DIRS[j, d] * x[d]
        return p

    @cuda.jit(device=True, fastmath=fastmath)
    def features(h1, r, x, t, n_freq, n_in, y):
        """hs[r, :n_in] = [x (D,), plane waves of x, t, sin(pi 2^k t), cos(pi 2^k t)
        for k < n_freq, one-hot of the label y (none if y < 0)] (``mlp.input_features``
        and ``mlp.label_features``), then zeros up to the next whole k-tile."""
        for d in range(D):
            h1[r * HS + d] = x[d]
        for k in range(K):
            for j in range(J):
                sk, ck = time_feature(projection(x, j), k)
                h1[r * HS + D + 2 * (k * J + j)] = sk
                h1[r * HS + D + 2 * (k * J + j) + 1] = ck
        h1[r * HS + E] = t
        for k in range(n_freq):
            sk, ck = time_feature(t, k)
            h1[r * HS + E + 1 + 2 * k] = sk
            h1[r * HS + E + 2 + 2 * k] = ck
        F = E + 1 + 2 * n_freq
        for f in range(F, (n_in + BK - 1) // BK * BK):
            h1[r * HS + f] = 0.0
        if y >= 0:
            h1[r * HS + F + y] = 1.0

    @cuda.jit(device=True, fastmath=fastmath)
    def gap_features(h1, r, h, n_freq, n_in):
        """hs[r, n_in - 1 - 2 n_freq:n_in] = [h, sin(pi 2^k h), 1 - cos(pi 2^k h)]: a flow
        map's second time, last (``flowmap.map_features``); after :func:`features`."""
        off = n_in - 1 - 2 * n_freq
        h1[r * HS + off] = h
        for k in range(n_freq):
            sk, ok = gap_feature(h, k)
            h1[r * HS + off + 1 + 2 * k] = sk
            h1[r * HS + off + 2 + 2 * k] = ok

    @cuda.jit(device=True, fastmath=fastmath)
    def tangent_features(h1, r, x, m, n_in):
        """hs[r, :n_in] = d X / dx_m, the tangent of :func:`features` along e_m:
        e_m in the x columns, ``mlp.wave_tangent`` in the plane waves (as
        ``mlp.input_tangents``), zero for the time and label columns."""
        for d in range(D):
            h1[r * HS + d] = 1.0 if d == m else 0.0
        for k in range(K):
            for j in range(J):
                sk, ck = time_feature(projection(x, j), k)
                ts, tc = wave_tangent(sk, ck, k, DIRS[j, m])
                h1[r * HS + D + 2 * (k * J + j)] = ts
                h1[r * HS + D + 2 * (k * J + j) + 1] = tc
        for f in range(E, (n_in + BK - 1) // BK * BK):
            h1[r * HS + f] = 0.0

    grow = cuda.jit(device=True)(group_row)

    @cuda.jit(device=True)
    def row_of(p, s):
        return grow(p, s, NRG, G)

    class Namespace:
        pass

    ns = Namespace()
    ns.tile_matmul, ns.narrow_linear, ns.features, ns.col_of = \
        tile_matmul, narrow_linear, features, col_of
    ns.tangent_features, ns.hidden_stack, ns.row_of = tangent_features, hidden_stack, row_of
    ns.gap_features = gap_features
    ns.G, ns.PP = G, PB // G                 # rows per particle, particles per block
    ns.E = E                                 # the t column (after x and its plane waves)
    ns.load_resident, ns.resident_matmul = load_resident, resident_matmul
    ns.RED, ns.WS, ns.cfg, ns.D = RED, WS, cfg, D
    ns.HSIZE, ns.WSIZE = HSIZE, WSIZE
    # static arrays hs (length 1 when hs is the dynamic buffer instead) and ws
    ns.HSTATIC, ns.WSTATIC = (1 if cfg.DYN else HSIZE), WSIZE
    return ns
