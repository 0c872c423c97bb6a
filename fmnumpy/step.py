"""One training step of conditional flow matching, fused into one compiled call.

Dimension letters: B batch, D data dimension, P parameters, C chunks.

    xt, ut = path(x0, x1, t[, eps])           paths.fill_path
    v      = MLP(concat(xt, features(t)))     mlp.velocity
    L      = mean (v - ut)^2                  loss.cfm_loss_forward
    dv     = dL/dv                            loss.cfm_loss_backward
    dtheta = backprop(dv)                     mlp.mlp_backward
    theta  = Adam(theta, dtheta); ema         optim.clip_grad_norm, optim.adam_update,
                                              optim.ema_update

Each part is its own function (and tested on its own).  :func:`train_step`
can split the batch into C chunks (``StepBuffers(n_chunks=C)``, bounding the
workspace of very large batches): each chunk runs :func:`loss_and_grad` on its
rows into its own gradient buffer, and the chunk gradients are summed with
weights B_c / B, which is exactly the gradient of the mean loss over the whole
batch (docs/gradients.md#chunks).  The compiled code is serial; the threads are
BLAS's, inside the matrix products (running Numba threads that each call
SciPy's OpenBLAS was measured 15x slower: its calls serialise).
"""
import numpy as np
from numba import njit

from .config import DTYPE
from .loss import cfm_loss_backward, cfm_loss_forward
from .mlp import _slice2d, mlp_backward, param_count, velocity, zero_grad
from .optim import adam_update, clip_grad_norm, ema_update
from .paths import fill_path


@njit(cache=True)
def loss_and_grad(theta, dtheta, sizes, kind, n_freq, path, sigma, x0, x1, t, eps,
                  xt, ut, dv, X, A, Z, G1, G2, S):
    """L(theta) on the batch (x0, x1, t, eps) and dtheta = dL/dtheta (overwritten).

    path, sigma: the path's code and parameter (``paths.fill_path``); x0, x1
    (B, D), t (B,), eps (B, D) the bridge noise of the sb path, else (0, D);
    xt, ut, dv (B, D) and X, A, Z, G1, G2, S are buffers (see mlp.Workspace)."""
    fill_path(path, x0, x1, t, sigma, eps, xt, ut)
    v = velocity(theta, sizes, kind, n_freq, xt, t, X, A, Z)
    loss = cfm_loss_forward(v, ut)
    cfm_loss_backward(v, ut, dv)
    zero_grad(dtheta)
    mlp_backward(dv, theta, sizes, kind, X, A, Z, dtheta, G1, G2, S)
    return loss


class StepBuffers:
    """Per-chunk buffers of :func:`train_step`, one row per chunk (C, ...);
    ``dthetas`` (C - 1, P) holds the gradients of chunks 1..C-1 (chunk 0 writes
    into dtheta itself, so one chunk, the default, needs no extra buffer)."""

    def __init__(self, sizes, batch, n_chunks=1, dtype=DTYPE):
        sizes = np.asarray(sizes, dtype=np.int64)
        C = max(1, min(int(n_chunks), int(batch)))
        Bc = -(-int(batch) // C)
        D, F = int(sizes[-1]), int(sizes[0])
        hsum, hid = int(sizes[1:].sum()), int(sizes[1:-1].sum())
        z = lambda n: np.zeros((C, n), dtype=dtype)       # noqa: E731
        self.n_chunks, self.chunk = C, Bc
        self.xt, self.ut, self.dv = z(Bc * D), z(Bc * D), z(Bc * D)
        self.X, self.A, self.Z = z(Bc * F), z(Bc * hsum), z(Bc * hid)
        self.G1, self.G2 = z(Bc * int(sizes.max())), z(Bc * int(sizes.max()))
        self.S = z(int((sizes[:-1] * sizes[1:]).max()))
        self.dthetas = np.zeros((C - 1, param_count(sizes)), dtype=dtype)
        self.losses = np.zeros(C, dtype=np.float64)

    def args(self):
        return (self.xt, self.ut, self.dv, self.X, self.A, self.Z, self.G1, self.G2, self.S,
                self.dthetas, self.losses)


@njit(cache=True)
def chunked_loss_and_grad(theta, dtheta, sizes, kind, n_freq, path, sigma, x0, x1, t, eps,
                          xt, ut, dv, X, A, Z, G1, G2, S, dthetas, losses):
    """:func:`loss_and_grad` over C chunks of the batch, one after another;
    returns L and writes dtheta = sum_c (B_c / B) dL_c/dtheta."""
    B, D = x0.shape
    F = sizes[0]
    C = losses.shape[0]
    Bc = (B + C - 1) // C
    hsum = 0
    for l in range(1, sizes.shape[0]):
        hsum += sizes[l]
    hid = hsum - sizes[-1]
    w = np.zeros(C)                  # chunk weights B_c / B
    for c in range(C):
        w[c] = max(0, min(B, c * Bc + Bc) - c * Bc) / B
    for c in range(C):
        lo = c * Bc
        n = min(B, lo + Bc) - lo
        losses[c] = 0.0
        # chunk 0 writes straight into dtheta, chunk c >= 1 into row c - 1
        g = dtheta if c == 0 else dthetas[c - 1]
        if n > 0:
            lc = loss_and_grad(theta, g, sizes, kind, n_freq, path, sigma,
                               x0[lo:lo + n], x1[lo:lo + n], t[lo:lo + n],
                               eps[lo:lo + n],       # (0, D) stays empty: no noise
                               _slice2d(xt[c], 0, n, D), _slice2d(ut[c], 0, n, D),
                               _slice2d(dv[c], 0, n, D), _slice2d(X[c], 0, n, F),
                               A[c][:n * hsum], Z[c][:n * hid], G1[c], G2[c], S[c])
            losses[c] = lc * w[c]
        else:
            g[:] = 0.0
    if C > 1:
        P = theta.shape[0]
        for i in range(P):
            acc = w[0] * dtheta[i]
            for c in range(1, C):
                acc += w[c] * dthetas[c - 1, i]
            dtheta[i] = acc
    return losses.sum()


@njit(cache=True)
def train_step(theta, dtheta, m, v, ema, sizes, kind, n_freq, path, sigma, x0, x1, t, eps,
               k, lr, b1, b2, adam_eps, wd, decoupled, clip, ema_decay,
               xt, ut, dv, X, A, Z, G1, G2, S, dthetas, losses):
    """Loss, gradient, clipping, Adam step k and EMA update; returns (loss, ||g||).

    Clipping scales g by min(1, clip / ||g||) (clip <= 0: off).  A non-finite
    loss or gradient leaves theta, the moments and the EMA untouched, so the
    caller can stop with the last good weights.
    """
    loss = chunked_loss_and_grad(theta, dtheta, sizes, kind, n_freq, path, sigma,
                                 x0, x1, t, eps, xt, ut, dv, X, A, Z, G1, G2, S, dthetas, losses)
    if not np.isfinite(loss):
        return loss, np.nan
    gnorm = clip_grad_norm(dtheta, clip)      # dtheta is scratch: clipping it is harmless
    if not np.isfinite(gnorm):
        return np.inf, gnorm
    adam_update(theta, dtheta, m, v, k, lr, b1, b2, adam_eps, wd, decoupled)
    ema_update(ema, theta, ema_decay)
    return loss, gnorm
