"""Forward-mode tangents of the MLP: each layer's forward with its tangent rule beside
it, shared by every family's exact likelihood (docs/likelihood.md).

Dimension letters: B rows, M tangent directions, H hidden width.

    linear:      z = h W + b          dz = dh W
    activation:  a = sigma(z)         da = sigma'(z) * dz

The pass recomputes the forward itself (rather than calling ``mlp.mlp_forward``) so
that z, sigma(z) and sigma'(z) come from one evaluation per element; the tests check
that its v equals ``mlp.mlp_forward``'s.
"""
import numpy as np
from numba import njit

from fmnumpy.nn.activations import act_cpu, dact_cpu
from fmnumpy.nn.mlp import _slice2d, linear_forward


@njit(cache=True)
def linear_forward_jvp(h, W, b, z, dh, Wt, dz):
    """z = h W + b (B, n_out) and its tangent dz = dh Wt (M B, n_out).

    Wt is W, or for the first layer the rows of W that multiply x (the time
    features do not move with x); the bias has no tangent."""
    linear_forward(h, W, b, z)
    np.dot(dh, Wt, dz)


@njit(cache=True, error_model="numpy")   # no zero-division check: vectorises
def activation_forward_jvp(a, da, kind, s):
    """In place: a = sigma(z) (B, H) with z given in a, and da = sigma'(z) * dz
    (M B, H) with dz given in da, for M stacked tangent directions; s (H,) scratch
    for one row of sigma'(z) (two loops over j that vectorise, not one over m)."""
    B, H = a.shape
    M = da.shape[0] // B
    for i in range(B):
        for j in range(H):
            z = a[i, j]
            a[i, j] = act_cpu(z, kind)
            s[j] = dact_cpu(z, kind)
        for m in range(M):
            r = m * B + i
            for j in range(H):
                da[r, j] *= s[j]


@njit(cache=True)
def mlp_forward_jvp(theta, sizes, kind, X, A, U, T1, T2):
    """v = MLP(X) and the Jacobian-vector products JU[m] = (dv/dx) U[m].

    X (B, F) input features; A flat workspace of B * sum(sizes[1:]) entries
    (as ``Workspace.A``); U (M, B, D) tangents of the first D features (x, or
    an embedding of it of any width, ``manifold_solvers.embedding_tangents``);
    T1, T2 flat scratch of
    at least M * B * max(sizes[1:]) entries each.
    Returns v (B, D), a view into A, and JU (M, B, D), a view into T1 or T2.
    """
    M, B, D = U.shape
    L = sizes.shape[0] - 1
    h = X                                               # (B, F)
    dh = U.reshape((M * B, D))                          # (M B, D)
    p = 0
    a_off = 0
    srow = np.empty(sizes[1:].max(), dtype=A.dtype)
    for l in range(L):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        W = _slice2d(theta, p, n_in, n_out)
        Wt = _slice2d(theta, p, D if l == 0 else n_in, n_out)   # row-major: first rows
        b = theta[p + n_in * n_out:p + n_in * n_out + n_out]
        p += n_in * n_out + n_out
        a = _slice2d(A, a_off, B, n_out)                # (B, n_out)
        a_off += B * n_out
        da = _slice2d(T1 if l % 2 == 0 else T2, 0, M * B, n_out)  # (M B, n_out)
        linear_forward_jvp(h, W, b, a, dh, Wt, da)
        if l < L - 1:
            activation_forward_jvp(a, da, kind, srow)
        h = a
        dh = da
    return h, dh.reshape((M, B, sizes[L]))           # (M, B, D_out)


@njit(cache=True)
def divergence_from_jvp(JU, div):
    """div_i = sum_d (J_i e_d)_d for unit directions U[d, i] = e_d; JU (D, B, D)."""
    D, B, _ = JU.shape
    for i in range(B):
        acc = 0.0
        for d in range(D):
            acc += JU[d, i, d]
        div[i] = acc


@njit(cache=True)
def jacobian_from_jvp(JU, J):
    """J[i, k, d] = dv_k/dx_d = (J_i e_d)_k for unit directions; JU (D, B, D)."""
    D, B, _ = JU.shape
    for d in range(D):
        for i in range(B):
            for k in range(D):
                J[i, k, d] = JU[d, i, k]
