"""Tile shapes of the CUDA kernels and the block layout derived from them.

Pure Python (no numba.cuda): importing it never needs a GPU.  Threads per block
and fastmath come from ``fmnumpy.config`` (read at launch time); the tile
constants below are read at launch time too, so tests patch ``TILES`` to make
tiny problems span several blocks and several tiles.

The block MLP (``block_mlp.py``) evaluates the network on PB rows (particles or
batch rows) per block.  Its NT threads form an (NRG x NCG) grid of row groups
and column groups; thread (rg, cg) owns the TM x TN register tile of rows
rg + i NRG (i < TM) and columns cg + j NCG (j < TN), strided so that a warp's
shared-memory reads hit different banks.  All tile constants are powers of 2;
BK at least 4.  A layer's whole output (PB x HP)
is covered by the block's registers, so the result can overwrite its input in
the one shared activation buffer.
"""
from collections import namedtuple

from ..errors import FmnumpyError

TILES = {
    # block MLP (training forward/backward, samplers)
    "mlp_tm": 8,          # rows per thread (upper bound; lowered for small batches)
    "mlp_tn": 8,          # columns per thread
    "mlp_bk": 8,          # rows of W staged in shared memory per k-tile
    "mlp_bk_small": 32,   # the same when TM = 1 (small batches: fewer, larger k-tiles)
    "mlp_stage_regs": 16, # registers a thread stages W through (more would go to memory)
    "min_blocks": 128,    # training: lower TM until the batch spans this many blocks
    # weight-gradient GEMM dW = H^T dZ, split over the batch
    "wg_bm": 128, "wg_bn": 128,   # output tile (rows of W x columns of W)
    "wg_tm": 8, "wg_tn": 8,       # register tile per thread
    "wg_bk": 8,                   # batch rows staged per k-tile
    "wg_target_blocks": 264,      # split the batch until the grid has about this many blocks
    "max_registers": 168,         # cap for the fused MLP kernels (0: the compiler's choice),
                                  # lowered to 32768 / threads (two blocks per SM); on an
                                  # H200, 168 at 128 threads ran model B 14% faster than 255
    "mlp_threads_narrow": 256,    # sampler threads when HP <= 64 (model A: 0.133 s vs 0.176 s)
    # generic
    "max_grid": 1024,             # blocks of the grid-stride kernels (reduction, Adam), at most
}

SHARED_LIMIT = 48 * 1024 - 2048   # static shared memory per block, less room for small arrays

MlpConfig = namedtuple("MlpConfig", "PB TM TN BK NRG NCG NT HP HS")


def _round_up(n, m):
    return (n + m - 1) // m * m


def mlp_config(width, threads, rows=None, tiles=None):
    """Block layout for an MLP whose widest layer (input features included) has
    ``width`` units, with about ``threads`` threads per block.

    ``rows``: the number of rows to process (training batch); TM is lowered until
    they span ``min_blocks`` blocks.  Shrinks BK, then TM, to fit shared memory.
    """
    t = TILES if tiles is None else tiles
    TN, TM, BK = int(t["mlp_tn"]), int(t["mlp_tm"]), int(t["mlp_bk"])
    HP = _round_up(int(width), max(TN, 4))     # padded width: NCG column groups of TN
    NCG = HP // TN
    if rows is None and HP <= 64:              # narrow sampler: more threads per block
        threads = max(int(threads), int(t["mlp_threads_narrow"]))
    NRG = max(1, int(threads) // NCG)
    if rows is not None:
        while TM > 1 and -(-int(rows) // (NRG * TM)) < int(t["min_blocks"]):
            TM //= 2
    if TM == 1:
        BK = int(t["mlp_bk_small"])

    def row_length(BK):
        # whole k-tiles may read up to round_up(HP, BK) columns (kept zero);
        # +4: rows start in different banks and stay 16-byte aligned
        return _round_up(HP, BK) + 4

    def nbytes(TM, BK):
        return 4 * (NRG * TM * row_length(BK) + BK * (HP + 4))

    while nbytes(TM, BK) > SHARED_LIMIT:
        if BK > 4:
            BK //= 2
        elif TM > 1:
            TM //= 2
        else:
            raise FmnumpyError(f"layer width {width} is too wide for the CUDA kernels "
                               "(shared memory); use --device cpu")
    HS = row_length(BK)
    return MlpConfig(PB=NRG * TM, TM=TM, TN=TN, BK=BK, NRG=NRG, NCG=NCG, NT=NRG * NCG,
                     HP=HP, HS=HS)


def register_cap(threads, tiles=None):
    """max_registers for a fused MLP kernel of ``threads`` threads per block: the
    TILES cap, at most 32768 / threads so two blocks fit an SM (0: no cap)."""
    t = TILES if tiles is None else tiles
    cap = int(t["max_registers"])
    return min(cap, 32768 // int(threads)) if cap else 0


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
