"""Discrete flow matching (Gat et al., "Discrete Flow Matching", NeurIPS 2024) on
sequences of D tokens from a vocabulary of V values: the mixture path, the
network p(x1 | xt), its loss and gradient, the jump sampler and the ELBO.
Derivations: ``docs/discrete.md``.

Dimension letters: B batch, D positions, V vocabulary, K embedded tokens (V, or
V + 1 with the mask token V), E embedding width, F network input width
(D E + 1 + 2 n_freq), H hidden width, P parameters.

Mixture path (docs/discrete.md#path): each position independently

    xt^d = x1^d with probability kappa_t = t^n, else x0^d,

with x0^d the mask token V (source "mask") or a uniform token (source "uniform").

Network: xt (B, D) -> X = [emb[xt^1], ..., emb[xt^D], t, sin/cos(pi 2^k t)] (B, F)
-> MLP (mlp.py) -> logits (B, D V) -> a softmax per position: p(x1^d = v | xt).
With the mask source an unmasked position is known, p(x1^d | xt) = delta(xt^d)
("carry-over"), so only masked positions are predicted and enter the loss.

Parameters: one flat buffer theta = [emb (K E) | MLP (mlp.py's layout)].

Forward and backward side by side:

    embedding:     X[i, dE:(d+1)E] = emb[xt_id]      demb[xt_id] += dX[i, dE:(d+1)E]
    softmax + CE:  l = -sum w_id log p_id[x1_id]     dlogit_idv = w_id (p_idv - [v = x1_id])
"""
import math

import numpy as np
from numba import njit

from fmnumpy.nn.mlp import Workspace, mlp_backward, mlp_forward, time_feature_cpu, zero_grad

MASK, UNIFORM = "mask", "uniform"
SOURCES = (MASK, UNIFORM)


# ----------------------------------------------------------------------------
# layout
# ----------------------------------------------------------------------------

def token_count(vocab, source):
    """K: rows of the embedding table, V (+ 1 for the mask token V)."""
    return vocab + (1 if source == MASK else 0)


def net_sizes(dim, vocab, embed, hidden, n_freq):
    """(F, H_1, ..., H_k, D V): the MLP's layer sizes."""
    return np.array((dim * embed + 1 + 2 * n_freq,) + tuple(hidden) + (dim * vocab,),
                    dtype=np.int64)


class DiscreteWork:
    """Buffers of one batch of B: the MLP's ``Workspace`` plus dX (B, F) and the
    per-position probabilities P (B, D V)."""

    def __init__(self, sizes, batch, dtype):
        self.mlp = Workspace(sizes, batch, dtype)
        self.dX = np.zeros_like(self.mlp.X)
        self.P = np.zeros((int(batch), int(sizes[-1])), dtype=dtype)

    def buffers(self, rows):
        """The work tuple for the first ``rows`` rows."""
        w = self.mlp
        B, n = w.batch, rows
        return (w.X[:n], w.A[:w.A.shape[0] // B * n], w.Z[:w.Z.shape[0] // B * n],
                w.G1, w.G2, w.S, self.dX[:n], self.P[:n])


# ----------------------------------------------------------------------------
# mixture path and scheduler
# ----------------------------------------------------------------------------

def kappa(t, n):
    """kappa_t = t^n: the probability that a position already holds its x1."""
    return t ** n


def jump_rate(t, n):
    """lambda_t = kappa'_t / (1 - kappa_t) = n t^(n-1) / (1 - t^n): the hazard with
    which a position not yet at x1 jumps to it."""
    return n * t ** (n - 1) / (1.0 - t ** n)


def mixture_path(x0, x1, t, n, u):
    """xt (B, D) int64: x1 where u < kappa_t, else x0.  u (B, D) uniform on [0, 1)."""
    return np.where(u < kappa(t, n)[:, None], x1, x0)


def draw_source(source, vocab, shape, rng):
    """x0 (shape) int64: the mask token V everywhere, or uniform tokens."""
    if source == MASK:
        return np.full(shape, vocab, dtype=np.int64)
    return rng.integers(0, vocab, size=shape, dtype=np.int64)


# ----------------------------------------------------------------------------
# layers: forward and backward side by side
# ----------------------------------------------------------------------------

@njit(cache=True)
def embedding_forward(emb, xt, X):
    """X[i, d E:(d+1) E] = emb[xt[i, d]].  emb (K, E), xt (B, D) -> X (B, >= D E)."""
    B, D = xt.shape
    E = emb.shape[1]
    for i in range(B):
        for d in range(D):
            k = xt[i, d]
            for e in range(E):
                X[i, d * E + e] = emb[k, e]


@njit(cache=True)
def embedding_backward(dX, xt, demb):
    """demb[xt[i, d]] += dX[i, d E:(d+1) E]: each row of the table collects the
    gradient of every place it was copied to."""
    B, D = xt.shape
    E = demb.shape[1]
    for i in range(B):
        for d in range(D):
            k = xt[i, d]
            for e in range(E):
                demb[k, e] += dX[i, d * E + e]


@njit(cache=True)
def time_columns(t, off, n_freq, X):
    """X[:, off] = t, then (sin, cos)(pi 2^k t) for k < n_freq (mlp.time_feature).
    t is an input: no backward."""
    for i in range(t.shape[0]):
        X[i, off] = t[i]
        for k in range(n_freq):
            X[i, off + 1 + 2 * k], X[i, off + 2 + 2 * k] = time_feature_cpu(t[i], k)


@njit(cache=True)
def softmax_forward(logits, D, P):
    """P[i, dV:(d+1)V] = softmax(logits[i, dV:(d+1)V]), shifted by the maximum."""
    B = logits.shape[0]
    V = logits.shape[1] // D
    for i in range(B):
        for d in range(D):
            o = d * V
            mx = logits[i, o]
            for v in range(1, V):
                mx = max(mx, logits[i, o + v])
            s = 0.0
            for v in range(V):
                e = math.exp(logits[i, o + v] - mx)
                P[i, o + v] = e
                s += e
            for v in range(V):
                P[i, o + v] /= s


@njit(cache=True)
def xent_forward(P, x1, w):
    """l = -(1 / (B D)) sum_id w_id log p_id[x1_id]: the cross-entropy of x1 under
    p(x1 | xt), each position weighted by w (B, D) (1, or 0 where it is known)."""
    B, D = x1.shape
    V = P.shape[1] // D
    s = 0.0
    for i in range(B):
        for d in range(D):
            if w[i, d] != 0.0:
                s -= w[i, d] * math.log(max(P[i, d * V + x1[i, d]], 1e-30))
    return s / (B * D)


@njit(cache=True)
def xent_backward(P, x1, w, dlogits):
    """dl/dlogit_idv = w_id (p_idv - [v = x1_id]) / (B D): softmax and cross-entropy
    together (the Jacobian of the softmax contracted with -1/p at the target)."""
    B, D = x1.shape
    V = P.shape[1] // D
    c = 1.0 / (B * D)
    for i in range(B):
        for d in range(D):
            o = d * V
            wc = w[i, d] * c
            for v in range(V):
                dlogits[i, o + v] = wc * P[i, o + v]
            dlogits[i, o + x1[i, d]] -= wc


# ----------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------

@njit(cache=True)
def posterior(theta, net, xt, t, work):
    """p(x1 | xt) (B, D V) into work's P: embedding, time columns, MLP, softmax.
    net = (sizes, kind, n_freq, K, E).  Returns P."""
    sizes, kind, n_freq, K, E = net
    X, A, Z, G1, G2, S, dX, P = work
    D = xt.shape[1]
    emb = theta[:K * E].reshape((K, E))
    embedding_forward(emb, xt, X)
    time_columns(t, D * E, n_freq, X)
    logits = mlp_forward(theta[K * E:], sizes, kind, X, A, Z)
    softmax_forward(logits, D, P)
    return P


@njit(cache=True)
def loss_and_grad(theta, dtheta, net, x1, xt, t, w, work):
    """The loss l(theta) on one batch and dtheta = dl/dtheta (overwritten):
    posterior, cross-entropy, then back through the softmax, the MLP (with dX)
    and the embedding.  x1, xt (B, D) int64, t (B,), w (B, D) position weights."""
    sizes, kind, n_freq, K, E = net
    X, A, Z, G1, G2, S, dX, P = work
    posterior(theta, net, xt, t, work)
    loss = xent_forward(P, x1, w)
    L = sizes.shape[0] - 1
    B = x1.shape[0]
    a_last = A.shape[0] - B * sizes[L]
    dlogits = A[a_last:].reshape((B, sizes[L]))       # the logits are dead: reuse them
    xent_backward(P, x1, w, dlogits)
    zero_grad(dtheta)
    mlp_backward(dlogits, theta[K * E:], sizes, kind, X, A, Z, dtheta[K * E:], G1, G2, S, dX)
    embedding_backward(dX, xt, dtheta[:K * E].reshape((K, E)))
    return loss


def position_weights(source, xt, vocab, dtype):
    """w (B, D): 1 where a position is predicted; with the mask source only the
    masked ones (an unmasked position is carried over)."""
    if source == MASK:
        return (xt == vocab).astype(dtype)
    return np.ones(xt.shape, dtype=dtype)


# ----------------------------------------------------------------------------
# sampling: the discrete Euler jump sampler
# ----------------------------------------------------------------------------

@njit(cache=True)
def draw_categorical(P, rows, cols, u, D, xt):
    """xt[rows[j], cols[j]] <- a draw from position cols[j]'s distribution in row
    rows[j] of P (P's rows are xt's), by inverting its cumulative sum at u[j]."""
    V = P.shape[1] // D
    for j in range(rows.shape[0]):
        i, d = rows[j], cols[j]
        o = d * V
        c = 0.0
        k = V - 1                       # if rounding leaves the sum below u
        for v in range(V):
            c += P[i, o + v]
            if u[j] < c:
                k = v
                break
        xt[i, d] = k


def jump_probability(t, h, n, last):
    """The probability that a position not yet at x1 at time t gets there by t + h:
    (kappa_(t+h) - kappa_t) / (1 - kappa_t), exact for every power n (h lambda_t, the
    left-end Euler rule, is infinite at t = 0 when n < 1 and would unmask every
    position at once from the t = 0 posterior).  It is 1 on the last step, where
    kappa reaches 1."""
    if last:
        return 1.0
    k0, k1 = kappa(t, n), kappa(min(t + h, 1.0), n)
    return min(1.0, (k1 - k0) / (1.0 - k0))


# ----------------------------------------------------------------------------
# the ELBO
# ----------------------------------------------------------------------------

def gauss_legendre01(q):
    """Nodes and weights of q-point Gauss-Legendre quadrature on [0, 1]."""
    s, w = np.polynomial.legendre.leggauss(int(q))
    return 0.5 * (s + 1.0), 0.5 * w


ELBO_TAU_MAX = 12.0     # tau = -log(1 - s) runs to 12: 1 - s = 6e-6 at the end


def elbo_nodes(q, tau_max=ELBO_TAU_MAX):
    """Nodes s and weights of the uniform source's ELBO integral in tau = -log(1 - s)
    (docs/discrete.md#elbo): q-point Gauss-Legendre on [0, tau_max] in tau, where the
    integrand (1 - s) F + s G is bounded; in s its weight s / (1 - s) is singular at
    s = 1.  -> (s (q,), weights in tau (q,))."""
    u, w = gauss_legendre01(q)
    tau = tau_max * u
    return -np.expm1(-tau), tau_max * w
