"""Where everything lives in the device buffers: the layer table ``lay`` read by
the kernels (see ``step.py`` for its columns).

Dimension letters: B batch, L layers.  For sizes (F, H_1, ..., D):

    theta:  W_l (n_in, n_out) row-major, then b_l (n_out,), layer by layer (mlp.py)
    work:   H_l (B, n_in) the input of every layer (H_0 = the features X),
            Z_l (B, n_out) the pre-activation of every hidden layer,
            dZ_l (B, n_out) dL/dz of every layer
"""
import numpy as np

# columns of ``lay``; T_START: the layer's first tile in weight_grad's grid
N_IN, N_OUT, W_OFF, B_OFF, H_OFF, Z_OFF, DZ_OFF, T_START = range(8)


def layer_table(sizes, batch=0, wg=None):
    """(lay (L, 8) int64, size of ``work`` in floats, number of weight-gradient tiles).

    ``wg`` (tiles.WgConfig) sets the tiles of the weight-gradient GEMM; without it
    T_START is 0 (samplers need no tiles)."""
    sizes = [int(s) for s in sizes]
    L = len(sizes) - 1
    B = int(batch)
    lay = np.zeros((L, 8), dtype=np.int64)
    p = 0
    off = 0
    tiles = 0
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        lay[l, N_IN], lay[l, N_OUT] = n_in, n_out
        lay[l, W_OFF] = p
        lay[l, B_OFF] = p + n_in * n_out
        p += n_in * n_out + n_out
        lay[l, H_OFF] = off
        off += B * n_in
        if l < L - 1:
            lay[l, Z_OFF] = off
            off += B * n_out
        lay[l, DZ_OFF] = off
        off += B * n_out
        lay[l, T_START] = tiles
        if wg is not None:
            tiles += -(-n_in // wg.BM) * -(-n_out // wg.BN)
    return lay, max(off, 1), tiles
