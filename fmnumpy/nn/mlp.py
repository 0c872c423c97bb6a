"""The velocity network: a multilayer perceptron on ``concat(x, Fourier features of
x, t, time features[, label or condition])``.

Dimension letters: B batch, D data dimension, F input features, H hidden width,
P number of parameters.

Parameters live in ONE flat buffer ``theta`` (P,) and gradients in one buffer
``dtheta`` of the same layout; layer ``l`` owns ``W_l`` (n_in, n_out) followed by
``b_l`` (n_out,), so the optimizer, the EMA, checkpoints and the GPU copy are one
array each.  :func:`views` gives named views into it.

Each layer's forward is followed by its backward (``docs/gradients.md``):

    linear:      z = h W + b             dh = dz W^T,  dW += h^T dz,  db += sum_B dz
    activation:  a = sigma(z)            dz = da * sigma'(z)

Backward functions take the upstream gradient first, then what the forward
cached, and accumulate parameter gradients with ``+=``; :func:`zero_grad` clears
them once per step.
"""
import math

import numpy as np
from numba import njit

from fmnumpy.nn.activations import act_cpu, dact_cpu, activation_code
from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError


# ----------------------------------------------------------------------------
# bookkeeping: sizes, offsets, views, initialisation
# ----------------------------------------------------------------------------

X_DIRS = ("auto", "diagonals", "axes")


def direction_scheme(dim, x_dirs="auto"):
    """"diagonals" or "axes": the directions of the plane waves of x in D = dim
    dimensions; "auto" is "diagonals" up to ``config.FOURIER_UP_TO`` dimensions and
    "axes" above, so the input width grows linearly with D there."""
    if x_dirs not in X_DIRS:
        raise FmnumpyError(f"unknown x_dirs {x_dirs!r}; choose one of: {', '.join(X_DIRS)}")
    if x_dirs == "auto":
        from fmnumpy.config import FOURIER_UP_TO
        return "diagonals" if dim <= FOURIER_UP_TO else "axes"
    return x_dirs


def feature_directions(dim, x_dirs="diagonals"):
    """The directions b_j (J, D) of the plane-wave features of x (:func:`input_features`):
    the D coordinate axes and, with ``x_dirs`` "diagonals", the D (D - 1) diagonals
    (e_a + e_b) / sqrt 2, (e_a - e_b) / sqrt 2, a < b (J = D^2); with "axes" the axes
    alone (J = D)."""
    rows = [np.eye(dim)[a] for a in range(dim)]
    if direction_scheme(dim, x_dirs) == "axes":
        return np.array(rows).reshape(-1, dim)
    for a in range(dim):
        for b in range(a + 1, dim):
            for sign in (1.0, -1.0):
                r = np.zeros(dim)
                r[a], r[b] = 1.0, sign
                rows.append(r / np.sqrt(2.0))
    return np.array(rows).reshape(-1, dim)


def feature_count(dim, n_freq, n_classes=0, x_freqs=0, x_dirs="diagonals", flow_map=False,
                  n_cond=0):
    """F: input width for data dimension D = dim, ``x_freqs`` = K frequencies of
    plane waves of x along J directions (2 K J columns; J = D^2 with the diagonals,
    D along the axes alone: :func:`feature_directions`), ``n_freq`` sinusoidal
    frequencies of t (0 means the raw t only), for a conditional network either a
    one-hot label over ``n_classes`` classes plus the null class, or ``n_cond`` real
    numbers and their presence flag (:func:`condition_features`), and for a flow
    map the block of its second time (``euclidean/flowmap.py``, 1 + 2 n_freq):
    D + 2 K J + 1 + 2 n_freq (+ n_classes + 1 | + n_cond + 1) (+ 1 + 2 n_freq)."""
    J = dim * dim if direction_scheme(dim, x_dirs) == "diagonals" else dim
    return (dim + 2 * x_freqs * J + 1 + 2 * n_freq
            + (n_classes + 1 if n_classes else 0) + (n_cond + 1 if n_cond else 0)
            + (1 + 2 * n_freq if flow_map else 0))


def layer_sizes(dim, hidden, n_freq=0, n_classes=0, x_freqs=0, x_dirs="diagonals",
                flow_map=False, n_cond=0):
    """(F, H_1, ..., H_k, D) as an int64 array."""
    hidden = tuple(int(h) for h in hidden)
    if len(hidden) == 0 or min(hidden) < 1:
        raise FmnumpyError(f"hidden widths must be positive integers, got {hidden}")
    return np.array((feature_count(dim, n_freq, n_classes, x_freqs, x_dirs, flow_map, n_cond),)
                    + hidden + (dim,), dtype=np.int64)


@njit(cache=True)
def label_offset(D, feats):
    """The first one-hot column of a conditional network's X: D + 2 K J + 1 + 2 n_freq."""
    n_freq, K, b = feats
    return D + 2 * K * b.shape[0] + 1 + 2 * n_freq


def param_count(sizes):
    """P = sum over layers of n_in * n_out + n_out."""
    return int(sum(sizes[l] * sizes[l + 1] + sizes[l + 1] for l in range(len(sizes) - 1)))


def views(theta, sizes):
    """[(W_1, b_1), ..., (W_L, b_L)]: named views into the flat buffer."""
    out, p = [], 0
    for l in range(len(sizes) - 1):
        n_in, n_out = int(sizes[l]), int(sizes[l + 1])
        W = theta[p:p + n_in * n_out].reshape(n_in, n_out)
        p += n_in * n_out
        b = theta[p:p + n_out]
        p += n_out
        out.append((W, b))
    return out


def init_params(sizes, rng, dtype=DTYPE):
    """PyTorch's default ``nn.Linear`` initialisation, drawn from ``rng``:
    W and b uniform on [-1/sqrt(n_in), 1/sqrt(n_in)]."""
    theta = np.empty(param_count(sizes), dtype=dtype)
    for W, b in views(theta, sizes):
        bound = 1.0 / math.sqrt(W.shape[0])
        W[...] = rng.uniform(-bound, bound, size=W.shape)
        b[...] = rng.uniform(-bound, bound, size=b.shape)
    return theta


class Workspace:
    """Buffers the compiled forward/backward write into, sized for batch B.

    ``X`` (B, F) input features; ``A`` every layer's output, flat; ``Z`` the
    hidden layers' activation derivatives sigma'(z), flat; ``G1``/``G2`` gradients of hidden activations;
    ``S`` scratch for one weight gradient.
    """

    def __init__(self, sizes, batch, dtype=DTYPE):
        B = int(batch)
        self.batch = B
        self.X = np.zeros((B, int(sizes[0])), dtype=dtype)
        self.A = np.zeros(B * int(sizes[1:].sum()), dtype=dtype)
        self.Z = np.zeros(B * int(sizes[1:-1].sum()), dtype=dtype)
        self.G1 = np.zeros(B * int(sizes.max()), dtype=dtype)
        self.G2 = np.zeros(B * int(sizes.max()), dtype=dtype)
        self.S = np.zeros(int((sizes[:-1] * sizes[1:]).max()), dtype=dtype)

    def buffers(self):
        return self.X, self.A, self.Z, self.G1, self.G2, self.S


class StepWork:
    """The buffers of one training step on a velocity (every continuous family's) for
    batch B: xt, ut, dv (B, D) and the network's :class:`Workspace`."""

    def __init__(self, sizes, batch, dtype=DTYPE):
        D = int(sizes[-1])
        self.xt, self.ut, self.dv = (np.zeros((int(batch), D), dtype=dtype) for _ in range(3))
        self.ws = Workspace(sizes, batch, dtype)

    def buffers(self):
        return (self.xt, self.ut, self.dv) + self.ws.buffers()



# ----------------------------------------------------------------------------
# time features
# ----------------------------------------------------------------------------

def time_feature(t, k):
    """(sin(pi 2^k t), cos(pi 2^k t)): frequency k of :func:`input_features`, compiled
    for the CPU here and for the GPU in ``cuda/mlp.py``."""
    w = math.pi * 2.0 ** k
    return math.sin(w * t), math.cos(w * t)


time_feature_cpu = njit(cache=True, inline="always")(time_feature)


def double_angle(s, c):
    """(sin 2a, cos 2a) = (2 s c, c^2 - s^2) from s = sin a, c = cos a: the next
    octave of :func:`time_feature` at the same point without another sin and cos
    (the rounding error doubles per octave: a few float64 ulps for the few octaves
    used here)."""
    return 2.0 * s * c, (c - s) * (c + s)


double_angle_cpu = njit(cache=True, inline="always")(double_angle)


def wave_tangent(sk, ck, k, bd):
    """d/dy_d of (sin(w p), cos(w p)), p = b . y, w = pi 2^k, from sk = sin(w p),
    ck = cos(w p) and bd = b_d: (w b_d cos(w p), -w b_d sin(w p)).  The tangent
    rule of the plane waves, compiled for the CPU here and for the GPU in
    ``cuda/mlp.py``."""
    w = math.pi * 2.0 ** k
    return w * bd * ck, -w * bd * sk


wave_tangent_cpu = njit(cache=True, inline="always")(wave_tangent)


@njit(cache=True)
def plane_waves(X, i, D, K, b):
    """X[i, D + 2 (k J + j)], X[i, D + 2 (k J + j) + 1] = sin(w_k p_j), cos(w_k p_j)
    with p_j = b_j . y, y = X[i, :D] and w_k = pi 2^k, k < K: Fourier features of
    the point (Tancik et al. 2020), which let a smooth network resolve structure
    finer than its own scale.  The sphere's embedding uses them too
    (``riemannian.manifold_features``)."""
    J = b.shape[0]
    for j in range(J):
        p = 0.0
        for d in range(D):
            p += b[j, d] * X[i, d]
        # octave 0 by the time feature's formula at the projection p (one formula, CPU
        # and GPU), the higher ones by doubling its angle, in float64
        sk, ck = time_feature_cpu(p, 0)
        for k in range(K):
            X[i, D + 2 * (k * J + j)], X[i, D + 2 * (k * J + j) + 1] = sk, ck
            sk, ck = double_angle_cpu(sk, ck)


@njit(cache=True)
def plane_wave_tangents(X, i, D, K, b, U):
    """The tangents of :func:`plane_waves`: U[d, i, e] = d X[i, e] / dy_d (U (D, B, E))
    for the plane-wave columns e, read off X: d sin(w p) = w b_d cos(w p),
    d cos(w p) = -w b_d sin(w p) (the likelihood's forward-mode pass)."""
    J = b.shape[0]
    for d in range(D):
        for k in range(K):
            for j in range(J):
                sn = D + 2 * (k * J + j)                      # the sin column, then cos
                U[d, i, sn], U[d, i, sn + 1] = wave_tangent_cpu(X[i, sn], X[i, sn + 1], k,
                                                                b[j, d])


@njit(cache=True)
def input_features(x, t, feats, X):
    """X = [x, plane waves of x, t, sin(pi 2^k t), cos(pi 2^k t) for k < n_freq].

    x (B, D), t (B,), feats = (n_freq, K, b) (``MLPSpec.feats``: K frequencies of
    plane waves along the directions b (J, D), :func:`plane_waves`) -> X (B, F).
    No gradient flows into t or x during training, so there is no backward twin.
    """
    n_freq, K, b = feats
    B, D = x.shape
    E = D + 2 * K * b.shape[0]
    for i in range(B):
        for d in range(D):
            X[i, d] = x[i, d]
        plane_waves(X, i, D, K, b)
        X[i, E] = t[i]
        for k in range(n_freq):
            X[i, E + 1 + 2 * k], X[i, E + 2 + 2 * k] = time_feature_cpu(t[i], k)


@njit(cache=True)
def input_tangents(X, feats, U):
    """U[d, i] = d X_i[:E] / dx_d (D, B, E): the tangents of :func:`input_features`'
    x columns (e_d) and plane waves (:func:`plane_wave_tangents`); E = U.shape[2]."""
    _, K, b = feats
    M, B, E = U.shape
    for d in range(M):
        for i in range(B):
            for e in range(E):
                U[d, i, e] = 0.0
            U[d, i, d] = 1.0
    for i in range(B):
        plane_wave_tangents(X, i, M, K, b, U)


# ----------------------------------------------------------------------------
# layers: forward and backward side by side
# ----------------------------------------------------------------------------

@njit(cache=True)
def linear_forward(h, W, b, z):
    """z = h W + b.  h (B, n_in), W (n_in, n_out), b (n_out,) -> z (B, n_out)."""
    np.dot(h, W, z)
    B, n_out = z.shape
    for i in range(B):
        for j in range(n_out):
            z[i, j] += b[j]


@njit(cache=True)
def linear_backward(dz, h, W, dh, dW, db, S):
    """Gradients of z = h W + b given dz = dL/dz (B, n_out):
    dW += h^T dz,  db += sum_i dz_i,  dh = dz W^T (skipped when dh is empty).
    S is scratch of at least n_in * n_out entries."""
    n_in, n_out = W.shape
    hT_dz = S[:n_in * n_out].reshape((n_in, n_out))
    np.dot(h.T, dz, hT_dz)
    for a in range(n_in):
        for j in range(n_out):
            dW[a, j] += hT_dz[a, j]
    B = dz.shape[0]
    for i in range(B):
        for j in range(n_out):
            db[j] += dz[i, j]
    if dh.shape[0] > 0:
        np.dot(dz, W.T, dh)


@njit(cache=True, error_model="numpy")   # no zero-division check: the loop vectorises
def activation_forward(z, kind, a):
    """a = sigma(z) elementwise, z and a (B, H)."""
    B, H = z.shape
    for i in range(B):
        for j in range(H):
            a[i, j] = act_cpu(z[i, j], kind)


@njit(cache=True, error_model="numpy")   # no zero-division check: the loop vectorises
def activation_backward(da, z, kind, dz):
    """dz = da * sigma'(z) elementwise (may be computed in place, dz is da)."""
    B, H = z.shape
    for i in range(B):
        for j in range(H):
            dz[i, j] = da[i, j] * dact_cpu(z[i, j], kind)


# ----------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------
# The network fuses each hidden layer's bias, activation and activation
# derivative into one pass after the matrix product (the same formulas as the
# layer pairs above): the forward caches s_l = sigma'(z_l) in ``Z`` so the
# backward is dz_l = da_l * s_l, one transcendental evaluation per element.

@njit(cache=True)
def _slice2d(buf, start, rows, cols):
    return buf[start:start + rows * cols].reshape((rows, cols))


@njit(cache=True, error_model="numpy")   # no zero-division check: the loop vectorises
def bias_activation(a, b, kind, s):
    """In place: a = sigma(a + b), and s = sigma'(a + b) when s has rows.
    a, s (B, H), b (H,)."""
    B, n_out = a.shape
    if s.shape[0] > 0:
        for i in range(B):
            for j in range(n_out):
                z = a[i, j] + b[j]
                a[i, j] = act_cpu(z, kind)
                s[i, j] = dact_cpu(z, kind)
    else:
        for i in range(B):
            for j in range(n_out):
                a[i, j] = act_cpu(a[i, j] + b[j], kind)


@njit(cache=True)
def hidden_forward(h, W, b, kind, a, s):
    """a = sigma(h W + b), and s = sigma'(h W + b) when s has rows.
    h (B, n_in), W (n_in, n_out), b (n_out,) -> a, s (B, n_out)."""
    np.dot(h, W, a)
    bias_activation(a, b, kind, s)


@njit(cache=True)
def hidden_backward(da, s, dz):
    """dz = da * s, s = sigma'(z) cached by :func:`hidden_forward` (may be in place)."""
    B, H = da.shape
    for i in range(B):
        for j in range(H):
            dz[i, j] = da[i, j] * s[i, j]


@njit(cache=True)
def mlp_forward(theta, sizes, kind, X, A, Z):
    """v = MLP(X): hidden layers a_l = sigma(a_{l-1} W_l + b_l), last layer linear.

    X (B, F); A flat workspace for every layer's output; Z flat workspace that
    receives s_l = sigma'(z_l) of the hidden layers for the backward pass (pass
    an empty Z for inference: nothing is cached).  Returns v (B, D), a view into A.
    """
    B = X.shape[0]
    L = sizes.shape[0] - 1
    cache = Z.shape[0] > 0
    p = 0
    a_off = 0
    z_off = 0
    h = X
    for l in range(L):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        W = _slice2d(theta, p, n_in, n_out)
        b = theta[p + n_in * n_out:p + n_in * n_out + n_out]
        p += n_in * n_out + n_out
        a = _slice2d(A, a_off, B, n_out)
        a_off += B * n_out
        if l < L - 1:
            s = _slice2d(Z, z_off, B if cache else 0, n_out)
            z_off += B * n_out
            hidden_forward(h, W, b, kind, a, s)
        else:
            linear_forward(h, W, b, a)
        h = a
    return h


@njit(cache=True)
def mlp_backward(dv, theta, sizes, kind, X, A, Z, dtheta, G1, G2, S, dX):
    """Backpropagation through :func:`mlp_forward` given dv = dL/dv (B, D).

    Accumulates dL/dtheta into ``dtheta`` (same layout as theta).  Z holds the
    sigma'(z_l) cached by the forward; G1, G2 are workspaces for the gradients
    of hidden activations, S scratch.  ``dX`` (B, F) receives dL/dX = dz_1 W_1^T
    when it has rows (a learned input below the network, such as the token
    embedding of ``discrete.py``, needs it); pass an empty (0, F) array to skip
    it.  ``kind`` is unused (the forward cached sigma') but kept so forward and
    backward take the same arguments.
    """
    B = X.shape[0]
    L = sizes.shape[0] - 1
    # walking back from the ends of theta and A: p is where layer l's W starts,
    # a where its output starts in A (Z shares A's offsets); no per-step arrays
    p = 0
    a = 0
    for l in range(L):
        p += sizes[l] * sizes[l + 1] + sizes[l + 1]
        a += B * sizes[l + 1]
    dz = dv
    use_g1 = True
    for l in range(L - 1, -1, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        p -= n_in * n_out + n_out
        a -= B * n_out
        W = _slice2d(theta, p, n_in, n_out)
        dW = _slice2d(dtheta, p, n_in, n_out)
        db = dtheta[p + n_in * n_out:p + n_in * n_out + n_out]
        if l == 0:
            h = X
            dh = dX                                 # empty: no gradient wrt the input
        else:
            h = _slice2d(A, a - B * n_in, B, n_in)
            dh = _slice2d(G1 if use_g1 else G2, 0, B, n_in)
        linear_backward(dz, h, W, dh, dW, db, S)
        if l > 0:
            s_prev = _slice2d(Z, a - B * n_in, B, n_in)   # Z and A share offsets
            hidden_backward(dh, s_prev, dh)               # in place: dz_{l-1}
            dz = dh
            use_g1 = not use_g1


@njit(cache=True)
def zero_grad(dtheta):
    """Clear the gradient buffer once per step (backward accumulates)."""
    dtheta[:] = 0.0


@njit(cache=True)
def label_features(y, off, X):
    """X[:, off:] = one-hot of the labels y (B,) (class c in column off + c; the null
    class of classifier-free guidance is the last column).  A label is an input,
    so there is no backward: its weights, the rows of W_1 past ``off``, get their
    gradient from linear_backward like every other weight."""
    for i in range(y.shape[0]):
        for f in range(off, X.shape[1]):
            X[i, f] = 0.0
        X[i, off + y[i]] = 1.0


@njit(cache=True)
def condition_features(y, off, X):
    """X[:, off:] = the condition block of a conditional network, by the kind of y:
    labels y (B,) int64 as their one-hot (:func:`label_features`), or a continuous
    condition y (B, K + 1) copied as it is: K standardized numbers and a presence flag
    (1; an all-zero row is the null condition of guidance).  Numba compiles one branch
    per kind.  An input: no backward (its weights, W_1's rows past ``off``, get their
    gradient from linear_backward)."""
    if y.ndim == 1:
        label_features(y, off, X)
    else:
        for i in range(y.shape[0]):
            for k in range(y.shape[1]):
                X[i, off + k] = y[i, k]


@njit(cache=True)
def null_condition(y, off, X):
    """X[:, off:] = the null condition of guidance, for conditions of y's kind: the null
    class's one-hot (the last column), or zeros."""
    for i in range(X.shape[0]):
        for f in range(off, X.shape[1]):
            X[i, f] = 0.0
        if y.ndim == 1:
            X[i, X.shape[1] - 1] = 1.0


# ----------------------------------------------------------------------------
# the condition's embedding: a small MLP below the network
# ----------------------------------------------------------------------------
# A long observation (K numbers) can enter through e = MLP_e(c) (E numbers, the last
# of MLPSpec's ``embed`` widths) instead of itself: the block after the time features
# becomes [f e(c), f], f the presence flag (1; 0 for the null condition, whose block
# stays all zero).  MLP_e's parameters follow the network's in theta (from P_net =
# ``MLPSpec.n_net_params``), so Adam, EMA and checkpoints take them as they are.
#
#     forward                          backward
#     e = MLP_e(c)                     dL/de_i = f_i dL/dX[i, off:off + E]
#     X[:, off:] = [f e, f]            dL/dtheta_e, dL/dc = MLP_e's backprop of dL/de

@njit(cache=True)
def embed_forward(theta_e, esizes, kind, y, C, A, Z, out):
    """out (B, E + 1) = [f MLP_e(c), f] of condition blocks y = [c, f] (B, K + 1).  C (B, K)
    receives c (MLP_e's input, kept for the backward); A, Z are MLP_e's workspaces
    (:func:`mlp_forward`; an empty Z for inference).  Returns out."""
    B, K = C.shape
    for i in range(B):
        for k in range(K):
            C[i, k] = y[i, k]
    e = mlp_forward(theta_e, esizes, kind, C, A, Z)
    E = e.shape[1]
    for i in range(B):
        f = y[i, K]
        for j in range(E):
            out[i, j] = f * e[i, j]
        out[i, E] = f
    return out


@njit(cache=True)
def embed_backward(dX, off, y, theta_e, esizes, kind, work, dtheta_e, dE, dC):
    """Backpropagation through :func:`embed_forward` given dX = dL/dX (B, F) of the network's
    input: dE = f dX[:, off:off + E] (a null row adds nothing), then MLP_e's backward
    accumulates dL/dtheta_e into ``dtheta_e`` and, when dC has rows, writes dL/dc into dC
    (B, K); pass an empty dC to skip it.  work = (C, A, Z, G1, G2, S): MLP_e's workspace,
    C, A, Z as the forward left them."""
    C, A, Z, G1, G2, S = work
    B, E = dE.shape
    K = C.shape[1]
    for i in range(B):
        f = y[i, K]
        for j in range(E):
            dE[i, j] = f * dX[i, off + j]
    mlp_backward(dE, theta_e, esizes, kind, C, A, Z, dtheta_e, G1, G2, S, dC)


class EmbedWork:
    """The buffers of the condition's embedding for batch B: MLP_e's :class:`Workspace`
    (its X is C, the conditions (B, K)), the block out (B, E + 1), the network's dL/dX
    (B, F) and dL/de (B, E)."""

    def __init__(self, spec, batch, dtype=DTYPE):
        B = int(batch)
        self.ws = Workspace(spec.embed_sizes, B, dtype)
        self.out = np.zeros((B, spec.cond_width + 1), dtype=dtype)
        self.dX = np.zeros((B, int(spec.sizes[0])), dtype=dtype)
        self.dE = np.zeros((B, spec.cond_width), dtype=dtype)

    def buffers(self):
        return self.ws.buffers() + (self.out, self.dX, self.dE)


@njit(cache=True)
def velocity(theta, sizes, kind, feats, x, t, X, A, Z):
    """v(x, t) for particles x (B, D) at times t (B,): input features then MLP."""
    input_features(x, t, feats, X)
    return mlp_forward(theta, sizes, kind, X, A, Z)


class MLPSpec:
    """What defines the network apart from its weights: D, hidden widths,
    activation, time-feature frequencies, frequencies of the plane-wave
    features of x (``x_freqs``), number of classes (0: unconditional; else the
    labels 0..n_classes-1 and the null class n_classes enter as a one-hot after
    the time features), or instead ``n_cond`` real numbers of a continuous condition
    with their presence flag (:func:`condition_features`), and ``flow_map``: a second
    time input, last (the average velocity u(x, s, t) of ``euclidean/flowmap.py``).
    ``embed``: the widths (H_1, ..., E) of the condition's embedding MLP_e (K -> E, last
    layer linear; :func:`embed_forward`), () for none; its parameters follow the network's,
    ``n_params`` counts both.  Plain data, stored in checkpoints."""

    def __init__(self, dim, hidden=(256, 256, 256), activation="silu", n_freq=0, n_classes=0,
                 x_freqs=0, x_dirs="diagonals", flow_map=False, n_cond=0, embed=()):
        self.dim = int(dim)
        if self.dim < 1:
            raise FmnumpyError(f"data dimension must be at least 1, got {dim}")
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = str(activation).lower()
        self.kind = activation_code(self.activation)
        self.n_freq = int(n_freq)
        if self.n_freq < 0:
            raise FmnumpyError(f"time_freqs must be >= 0, got {n_freq}")
        self.x_freqs = int(x_freqs)
        if self.x_freqs < 0:
            raise FmnumpyError(f"x_freqs must be >= 0, got {x_freqs}")
        self.n_classes = int(n_classes)
        if self.n_classes < 0:
            raise FmnumpyError(f"the number of classes must be >= 0, got {n_classes}")
        self.n_cond = int(n_cond)
        if self.n_cond < 0 or (self.n_cond and self.n_classes):
            raise FmnumpyError(f"a network takes labels or a continuous condition, not both "
                               f"(n_classes {n_classes}, n_cond {n_cond})")
        self.embed = tuple(int(h) for h in embed)
        if self.embed and (not self.n_cond or min(self.embed) < 1):
            raise FmnumpyError(f"the condition's embedding takes positive widths and a "
                               f"continuous condition (n_cond {n_cond}, embed {embed})")
        self.cond_width = self.embed[-1] if self.embed else self.n_cond   # E, or K
        self.embed_sizes = np.array((self.n_cond,) + self.embed if self.embed else (),
                                    dtype=np.int64)
        self.x_dirs = direction_scheme(self.dim, x_dirs)        # resolved: diagonals or axes
        self.flow_map = bool(flow_map)
        self.sizes = layer_sizes(self.dim, self.hidden, self.n_freq, self.n_classes,
                                 self.x_freqs, self.x_dirs, self.flow_map, self.cond_width)
        self.n_net_params = param_count(self.sizes)
        self.n_params = self.n_net_params + (param_count(self.embed_sizes) if self.embed else 0)
        # first column of the one-hot or the condition
        self.label_offset = feature_count(self.dim, self.n_freq, 0, self.x_freqs, self.x_dirs)
        self.feats = (self.n_freq, self.x_freqs,
                      feature_directions(self.dim, self.x_dirs) if self.x_freqs
                      else np.zeros((0, self.dim)))

    @property
    def null_class(self):
        """The label of the null (unconditional) class: n_classes."""
        return self.n_classes

    def to_dict(self):
        return {"dim": self.dim, "hidden": list(self.hidden),
                "activation": self.activation, "n_freq": self.n_freq,
                "n_classes": self.n_classes, "x_freqs": self.x_freqs, "x_dirs": self.x_dirs,
                "flow_map": self.flow_map, "n_cond": self.n_cond, "embed": list(self.embed)}

    @classmethod
    def from_dict(cls, d):
        return cls(d["dim"], tuple(d["hidden"]), d["activation"], d.get("n_freq", 0),
                   d.get("n_classes", 0), d.get("x_freqs", 0), d.get("x_dirs", "diagonals"),
                   d.get("flow_map", False), d.get("n_cond", 0), tuple(d.get("embed", ())))

    def init_params(self, rng, dtype=DTYPE):
        """Fresh parameters (P,): the network's (:func:`init_params`), then MLP_e's."""
        theta = init_params(self.sizes, rng, dtype)
        if self.embed:
            theta = np.concatenate([theta, init_params(self.embed_sizes, rng, dtype)])
        return theta

    def __repr__(self):
        return (f"MLPSpec(dim={self.dim}, hidden={self.hidden}, "
                f"activation={self.activation!r}, n_freq={self.n_freq}, "
                f"x_freqs={self.x_freqs}, x_dirs={self.x_dirs!r})")
