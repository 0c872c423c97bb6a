"""Riemannian flow matching on the sphere and the flat torus (Chen & Lipman 2024).

Dimension letters: B batch, D coordinates of a point (``manifolds.py``), E width
of the point's embedding (:func:`embed_width`), F input features, P parameters.

One training step (``docs/manifolds.md``):

    xt, ut = geodesic(x0, x1, t)                      manifolds.geodesic
    X      = [embed(xt), t, features(t)]              manifold_features
    m      = MLP(X)                                   mlp.mlp_forward
    v      = P(xt) m                                  manifolds.proju
    L      = 1/(B D) sum_i |v_i - ut_i|^2             loss.cfm_loss_forward
    dv     = dL/dv = 2 (v - ut) / (B D)               loss.cfm_loss_backward
    dm     = P(xt)^T dv = P(xt) dv                    manifolds.proju (P is symmetric)
    dtheta = backprop(dm)                             mlp.mlp_backward

Both v and ut are tangent at xt, so |v - ut| is the Riemannian norm (the metric
induced by R^D on the sphere; the flat metric of the angles on the torus).  The
sphere's points enter the network as x / |x| and the torus's angles as
(cos x, sin x), with Fourier features of either (``x_freqs``), so the field is
defined (and smooth) off the manifold too: on the sphere it is constant along rays, which is what lets the sampler of
``manifold_solvers.py`` keep the order of its Runge-Kutta method.

The network is described by the tuple ``net = (code, sizes, kind, feats)`` with
feats = (n_freq, x_freqs, directions) (:func:`manifold_features`).
"""
import numpy as np
from numba import njit

from fmnumpy.nn.loss import cfm_loss_backward, cfm_loss_forward
from fmnumpy.manifold.manifolds import SPHERE, TORUS, geodesic, proju, row_dot
from fmnumpy.nn.mlp import feature_directions as mlp_feature_directions
from fmnumpy.nn.mlp import mlp_backward, mlp_forward, plane_waves, time_feature_cpu, zero_grad
from fmnumpy.train.state import GRAD, THETA
from fmnumpy.train.update import apply_update


def feature_directions(code, dim):
    """The directions b_j (J, D) of the sphere's (and R^D's) Fourier features
    (``mlp.feature_directions``: the axes and diagonals); none on the torus (its
    features are the harmonics)."""
    if code == TORUS:
        return np.zeros((0, dim))
    return mlp_feature_directions(dim)


def embed_width(code, dim, x_freqs=0):
    """E: the width of a point's embedding (:func:`manifold_features`):
    2 D (1 + K) on the torus, D + 2 K J otherwise (J directions), K = x_freqs."""
    if code == TORUS:
        return 2 * dim * (1 + x_freqs)
    return dim + 2 * x_freqs * feature_directions(code, dim).shape[0]


def net_sizes(code, dim, hidden, n_freq, x_freqs=0):
    """(F, H_1, ..., H_k, D) with F = E + 1 + 2 n_freq."""
    hidden = tuple(int(h) for h in hidden)
    return np.array((embed_width(code, dim, x_freqs) + 1 + 2 * n_freq,) + hidden + (dim,),
                    dtype=np.int64)


@njit(cache=True)
def manifold_features(code, x, t, feats, X):
    """X = [embed(x), t, sin(pi 2^k t), cos(pi 2^k t) for k < n_freq] (B, F) for
    x (B, D), t (B,), feats = (n_freq, K, b) with b (J, D) the directions of
    :func:`feature_directions`.

    embed(x) on the torus: the harmonics [cos(h x), sin(h x)] for h = 1 .. K + 1
    (integers: the features stay periodic); on the sphere y = x / |x| and, for
    k < K and each direction b_j, sin(pi 2^k b_j . y), cos(pi 2^k b_j . y) (plane
    waves on the embedded point, Fourier features as Tancik et al. 2020); in R^D
    the same with y = x.  No gradient flows into x or t in training, so there is
    no backward twin (the likelihood's tangents of the embedding are
    ``manifold_solvers.embedding_tangents``)."""
    n_freq, K, b = feats
    B, D = x.shape
    J = b.shape[0]
    E = 2 * D * (1 + K) if code == TORUS else D + 2 * K * J
    for i in range(B):
        if code == TORUS:
            for k in range(K + 1):
                for d in range(D):
                    X[i, 2 * D * k + d] = np.cos((k + 1) * x[i, d])
                    X[i, 2 * D * k + D + d] = np.sin((k + 1) * x[i, d])
        else:
            n = np.sqrt(row_dot(x, i, x, i)) if code == SPHERE else 1.0
            for d in range(D):
                X[i, d] = x[i, d] / n
            plane_waves(X, i, D, K, b)
        X[i, E] = t[i]
        for k in range(n_freq):
            X[i, E + 1 + 2 * k], X[i, E + 2 + 2 * k] = time_feature_cpu(t[i], k)


@njit(cache=True)
def manifold_velocity(theta, net, x, t, X, A, Z, v):
    """v = P(x) MLP(X) (B, D) at points x (B, D) and times t (B,).  X, A, Z are the
    network's workspace (``mlp.Workspace``; an empty Z caches nothing).  The
    projection uses the embedded point X[:, :D] (x / |x| on the sphere)."""
    code, sizes, kind, feats = net
    D = x.shape[1]
    manifold_features(code, x, t, feats, X)
    m = mlp_forward(theta, sizes, kind, X, A, Z)
    proju(code, X[:, :D], m, v)
    return v


@njit(cache=True)
def loss_and_grad(theta, dtheta, net, batch, work):
    """L(theta) on batch = (x0, x1, t) and dtheta = dL/dtheta (overwritten).
    work = (xt, ut, dv, X, A, Z, G1, G2, S) as ``nn.mlp.StepWork``; v is written
    into dv's buffer and then overwritten by dL/dv, then by dL/dm."""
    code, sizes, kind, _ = net
    x0, x1, t = batch
    xt, ut, dv, X, A, Z, G1, G2, S = work
    D = x0.shape[1]
    geodesic(code, x0, x1, t, xt, ut)
    v = manifold_velocity(theta, net, xt, t, X, A, Z, dv)            # (B, D), in dv
    loss = cfm_loss_forward(v, ut)
    cfm_loss_backward(v, ut, dv)                                     # dv = dL/dv
    proju(code, X[:, :D], dv, dv)                                    # dm = P(xt) dv
    zero_grad(dtheta)
    mlp_backward(dv, theta, sizes, kind, X, A, Z, dtheta, G1, G2, S, X[:0])
    return loss


@njit(cache=True)
def train_step(state, net, batch, hyper, work):
    """Loss, gradient, then ``step.apply_update`` (clipping, Adam, EMA; the same
    ``hyper`` tuple as ``step.train_step``) on ``state`` (5, P); returns
    (loss, ||g||).  A non-finite loss or gradient leaves the state untouched."""
    loss = loss_and_grad(state[THETA], state[GRAD], net, batch, work)
    return apply_update(state, loss, hyper)
