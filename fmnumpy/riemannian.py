"""Riemannian flow matching on the sphere and the flat torus (Chen & Lipman 2024).

Dimension letters: B batch, D coordinates of a point (``manifolds.py``), E width
of the point's embedding (D; 2D on the torus), F input features, P parameters.

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
(cos x, sin x), so the field is defined (and smooth) off the manifold too: on the
sphere it is constant along rays, which is what lets the sampler of
``manifold_solvers.py`` keep the order of its Runge-Kutta method.

The network is described by the tuple ``net = (code, sizes, kind, n_freq)``.
"""
import numpy as np
from numba import njit

from .loss import cfm_loss_backward, cfm_loss_forward
from .manifolds import SPHERE, TORUS, geodesic, proju, row_dot
from .mlp import mlp_backward, mlp_forward, time_feature_cpu, zero_grad
from .optim import adam_update, clip_grad_norm, ema_update
from .state import EMA, GRAD, THETA, M, V


def embed_width(code, dim):
    """E: the width of a point's embedding, 2D on the torus (cos, sin), else D."""
    return 2 * dim if code == TORUS else dim


def net_sizes(code, dim, hidden, n_freq):
    """(F, H_1, ..., H_k, D) with F = E + 1 + 2 n_freq."""
    hidden = tuple(int(h) for h in hidden)
    return np.array((embed_width(code, dim) + 1 + 2 * n_freq,) + hidden + (dim,),
                    dtype=np.int64)


@njit(cache=True)
def manifold_features(code, x, t, n_freq, X):
    """X = [embed(x), t, sin(pi 2^k t), cos(pi 2^k t) for k < n_freq].

    x (B, D), t (B,) -> X (B, F).  embed(x) = x / |x| on the sphere, (cos x, sin x)
    on the torus, x on Euclidean space.  No gradient flows into x or t in
    training, so there is no backward twin (the likelihood's tangents of the
    embedding are :func:`embedding_tangents`)."""
    B, D = x.shape
    E = 2 * D if code == TORUS else D
    for i in range(B):
        if code == SPHERE:
            n = np.sqrt(row_dot(x, i, x, i))
            for d in range(D):
                X[i, d] = x[i, d] / n
        elif code == TORUS:
            for d in range(D):
                X[i, d] = np.cos(x[i, d])
                X[i, D + d] = np.sin(x[i, d])
        else:
            for d in range(D):
                X[i, d] = x[i, d]
        X[i, E] = t[i]
        for k in range(n_freq):
            X[i, E + 1 + 2 * k], X[i, E + 2 + 2 * k] = time_feature_cpu(t[i], k)


@njit(cache=True)
def manifold_velocity(theta, net, x, t, X, A, Z, v):
    """v = P(x) MLP(X) (B, D) at points x (B, D) and times t (B,).  X, A, Z are the
    network's workspace (``mlp.Workspace``; an empty Z caches nothing).  The
    projection uses the embedded point X[:, :D] (x / |x| on the sphere)."""
    code, sizes, kind, n_freq = net
    D = x.shape[1]
    manifold_features(code, x, t, n_freq, X)
    m = mlp_forward(theta, sizes, kind, X, A, Z)
    proju(code, X[:, :D], m, v)
    return v


@njit(cache=True)
def loss_and_grad(theta, dtheta, net, batch, work):
    """L(theta) on batch = (x0, x1, t) and dtheta = dL/dtheta (overwritten).
    work = (xt, ut, dv, X, A, Z, G1, G2, S) as ``step.StepWork``; v is written
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
    """Loss, gradient, clipping, Adam step and EMA update on ``state`` (5, P), as
    ``step.train_step`` (the same ``hyper`` tuple); returns (loss, ||g||).  A
    non-finite loss or gradient leaves the state untouched."""
    k, lr, b1, b2, adam_eps, wd, decoupled, clip, ema_decay = hyper
    theta, dtheta = state[THETA], state[GRAD]
    loss = loss_and_grad(theta, dtheta, net, batch, work)
    if not np.isfinite(loss):
        return loss, np.nan
    gnorm = clip_grad_norm(dtheta, clip)
    if not np.isfinite(gnorm):
        return np.inf, gnorm
    adam_update(theta, dtheta, state[M], state[V], k, lr, b1, b2, adam_eps, wd, decoupled)
    ema_update(state[EMA], theta, ema_decay)
    return loss, gnorm
