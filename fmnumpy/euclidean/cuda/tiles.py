"""Tile shapes of the CUDA kernels and the block layout derived from them.

Pure Python (no numba.cuda): importing it never needs a GPU.  Threads per block
and fastmath come from ``fmnumpy.config`` (read at launch time); the tile
constants below are read at launch time too, so tests patch ``TILES`` to make
tiny problems span several blocks and several tiles.

The block MLP (``mlp.py``) evaluates the network on PB rows (particles or
batch rows) per block.  Its NT threads form an (NRG x NCG) grid of row groups
and column groups; thread (rg, cg) owns the TM x TN register tile of rows
rg + i NRG (i < TM) and columns cg + j NCG (j < TN), strided so that a warp's
shared-memory reads hit different banks.  All tile constants are powers of 2;
BK at least 4.  A layer's whole output (PB x HP)
is covered by the block's registers, so the result can overwrite its input in
the one shared activation buffer.
"""
from collections import namedtuple

from fmnumpy.errors import FmnumpyError

TILES = {
    # block MLP (training forward/backward, samplers)
    "mlp_tm": 8,          # rows per thread (upper bound; lowered for small batches)
    "mlp_tn": 8,          # columns per thread
    "mlp_bk": 8,          # rows of W staged in shared memory per k-tile
    "mlp_bk_small": 32,   # the same when TM = 1 (small batches: fewer, larger k-tiles)
    # The five entries below make every benchmark kernel compile for sm_90 without
    # local-memory spills (bench/results/ptxas.md).  Measured on an H200 before they
    # existed: mlp_stage_regs 16, mlp_kpass 4, forward_backward staging 16, the
    # likelihood at 2 blocks per SM (bench/gpu_sweep.py keeps them as "prev_default").
    "mlp_stage_regs": 4,  # registers a thread stages W through (more would go to memory)
    "mlp_kpass": 1,       # k per pass of the samplers' products: 4, 2 or 1 (fewer live
                          # registers: no spills at the 128-register cap of 256 threads)
    "fb_stage_regs": 8,   # the same for forward_backward (0: mlp_stage_regs)
    "fb_kpass": 4,        # k per pass of forward_backward's products
    "logp_stage_regs": 16,  # the likelihood kernel's (0: mlp_stage_regs); its other tiles
    "logp_min_blocks_per_sm": 1,  # are the sampler's; blocks per SM of its register cap
    "min_blocks": 128,    # training: lower TM until the batch spans this many blocks
    # weight-gradient GEMM dW = H^T dZ, split over the batch
    "wg_bm": 128, "wg_bn": 128,   # output tile (rows of W x columns of W)
    "wg_tm": 8, "wg_tn": 8,       # register tile per thread
    "wg_bk": 8,                   # batch rows staged per k-tile
    "wg_target_blocks": 264,      # split the batch until the grid has about this many blocks
    "max_registers": 168,         # cap for the fused MLP kernels (0: the compiler's choice),
                                  # lowered to 32768 / threads (two blocks per SM); on an
                                  # H200, 168 at 128 threads ran model B 14% faster than 255
    "mlp_threads_narrow": 128,    # sampler threads when HP <= 64 (model A: resident W,
                                  # 8 x 8 tiles, PB = 128; streamed W ran best at 256)
    "mlp_threads_wide": 256,      # sampler threads when HP > 64 (0: CUDA_THREADS_PER_BLOCK);
                                  # 256 (PB = 64, dynamic shared memory) sampled model B in
                                  # 1.059 s against 1.095 s at 128 on an H200 (gpu_sweep.md)
    "fb_threads": 0,              # forward_backward threads (0: CUDA_THREADS_PER_BLOCK)
    "mlp_resident": 1,            # sampler: keep the hidden layers' W in shared memory for
                                  # all time steps when they fit (no k-tile staging/barriers)
    "mlp_dynamic_shared": 113 * 1024,  # shared memory a fused MLP block may use when its
                                  # layout does not fit static arrays (dynamic shared memory,
                                  # opt-in above 48 KB; 113 KB: two blocks per SM; 0: never)
    "min_blocks_per_sm": 2,       # max_registers is lowered until this many blocks fit an SM
    # generic
    "max_grid": 1024,             # blocks of the grid-stride kernels (reduction, Adam), at most
}

SHARED_LIMIT = 48 * 1024 - 2048   # static shared memory per block, less room for small arrays
DYNAMIC_MAX = 227 * 1024          # shared memory per block an H100/H200 kernel may opt in to
STATIC_MAX = 48 * 1024            # static shared memory per block

# WS: row length of the W buffer ws; WROWS: its rows (BK k-tile rows, or all resident
# rows); RES: W resident (sampler); DYN: bytes of hs in dynamic shared memory (0: hs
# is a static array).
MlpConfig = namedtuple("MlpConfig", "PB TM TN BK NRG NCG NT HP HS WS WROWS RES DYN")


def _round_up(n, m):
    return (n + m - 1) // m * m


def small_shared(NT, PB):
    """Bytes of the small static shared arrays beside hs and ws (partial sums,
    particle states, stage velocities, targets for D = 2; more D: see the
    fallback of the callers)."""
    return 4 * (max(NT, 2 * PB) + 10 * PB) + 8 * NT + 512


def mlp_config(width, threads, rows=None, tiles=None, resident=(), dynamic=0, group=1):
    """Block layout for an MLP whose widest layer (input features included) has
    ``width`` units, with about ``threads`` threads per block.

    ``rows``: the number of rows to process (training batch); TM is lowered until
    they span ``min_blocks`` blocks.  ``resident``: the n_in of the hidden layers
    whose W the block keeps in shared memory (sampler), empty: W is streamed in
    k-tiles.  ``dynamic``: bytes of shared memory allowed (0: SHARED_LIMIT); a
    layout above SHARED_LIMIT puts hs in dynamic shared memory (DYN > 0), ws and
    the small arrays stay static (at most STATIC_MAX).  Shrinks BK, then TM, to fit.
    ``group``: TM is a multiple of it (G rows per particle, ``mlp.group_row``; the
    likelihood's D + 1), so TM = G m with m a power of 2.
    """
    t = TILES if tiles is None else tiles
    TN, TM, BK = int(t["mlp_tn"]), int(t["mlp_tm"]), int(t["mlp_bk"])
    HP = _round_up(int(width), max(TN, 4))     # padded width: NCG column groups of TN
    NCG = HP // TN
    if rows is None and HP <= 64:              # narrow sampler: more threads per block
        threads = max(int(threads), int(t["mlp_threads_narrow"]))
    elif rows is None and int(t.get("mlp_threads_wide", 0)):
        threads = int(t["mlp_threads_wide"])
    elif rows is not None and int(t.get("fb_threads", 0)):
        threads = int(t["fb_threads"])
    NRG = max(1, int(threads) // NCG)
    if rows is not None:
        while TM > 1 and -(-int(rows) // (NRG * TM)) < int(t["min_blocks"]):
            TM //= 2
    G = int(group)
    if G > 1:
        TM = G * max(1, TM // G)
    if TM == 1:
        BK = int(t["mlp_bk_small"])

    def row_length(BK):
        # whole k-tiles may read up to round_up(HP, BK) columns (kept zero);
        # +4: rows start in different banks and stay 16-byte aligned
        return _round_up(HP, BK) + 4

    WS = HP if resident else HP + 4    # resident W is read by broadcast: no padding

    def w_rows(BK):
        return sum(_round_up(int(n), BK) for n in resident) if resident else BK

    def nbytes(TM, BK):
        return 4 * (NRG * TM * row_length(BK) + w_rows(BK) * WS)

    def fits(TM, BK):
        if nbytes(TM, BK) <= SHARED_LIMIT:
            return True
        # hs in dynamic memory; ws and the small arrays static (at most 48 KB)
        static = 4 * w_rows(BK) * WS + small_shared(NRG * NCG, NRG * TM)
        return bool(dynamic) and static <= STATIC_MAX and \
            4 * NRG * TM * row_length(BK) + static <= min(int(dynamic), DYNAMIC_MAX)

    while not fits(TM, BK):
        if BK > 4:
            BK //= 2
        elif TM > G:
            TM = G * max(1, TM // G // 2)
        else:
            raise FmnumpyError(f"layer width {width} is too wide for the CUDA kernels "
                               "(shared memory); use --device cpu")
    HS = row_length(BK)
    dyn = 4 * NRG * TM * HS if nbytes(TM, BK) > SHARED_LIMIT else 0
    return MlpConfig(PB=NRG * TM, TM=TM, TN=TN, BK=BK, NRG=NRG, NCG=NCG, NT=NRG * NCG,
                     HP=HP, HS=HS, WS=WS, WROWS=w_rows(BK), RES=bool(resident), DYN=dyn)


def stage_regs(kernel="mlp", tiles=None):
    """Registers ``kernel`` ("mlp": the samplers, "fb": forward_backward, "logp": the
    likelihood) stages W through: TILES[kernel + "_stage_regs"], where 0 means
    mlp_stage_regs."""
    t = TILES if tiles is None else tiles
    return int(t.get(f"{kernel}_stage_regs", 0)) or int(t["mlp_stage_regs"])


def register_cap(threads, tiles=None, per_sm_key="min_blocks_per_sm"):
    """max_registers for a fused MLP kernel of ``threads`` threads per block: the
    TILES cap, at most 65536 / (threads per_sm) so that per_sm = TILES[per_sm_key]
    blocks fit an SM (0: no cap)."""
    t = TILES if tiles is None else tiles
    cap = int(t["max_registers"])
    per_sm = max(1, int(t.get(per_sm_key, 2)))
    return min(cap, 255, 65536 // (int(threads) * per_sm)) if cap else 0


WgConfig = namedtuple("WgConfig", "BM BN TM TN BK NRG NCG NT")


def wg_config(tiles=None):
    """Tile layout of the weight-gradient GEMM (see ``train_kernels.weight_grad``)."""
    t = TILES if tiles is None else tiles
    BM, BN, TM, TN = int(t["wg_bm"]), int(t["wg_bn"]), int(t["wg_tm"]), int(t["wg_tn"])
    if BM % TM or BN % TN:
        raise FmnumpyError("wg tiles must be multiples of the register tile")
    NRG, NCG = BM // TM, BN // TN
    if BN > NRG * NCG:
        raise FmnumpyError("wg_bn must not exceed the threads of a block (bias sums)")
    return WgConfig(BM=BM, BN=BN, TM=TM, TN=TN, BK=int(t["wg_bk"]), NRG=NRG, NCG=NCG,
                    NT=NRG * NCG)
