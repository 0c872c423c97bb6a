"""Exact log-likelihood of a flow by the instantaneous change of variables.

Dimension letters: B particles, D data dimension, F input features, H hidden
width, M tangent directions (M = D for the exact divergence).

Along a solution of dx/dt = v(x, t) the density obeys (``docs/likelihood.md``)

    d/dt log p_t(x_t) = -div v(x_t, t),      div v = sum_d dv_d / dx_d,

so integrating the augmented state s = [x, l] with ds/dt = [v, -div v] from
t = 0 (l(0) = log N(x0; 0, I)) to t = 1 gives a sample and its log-density in
the same solve, and integrating it backwards from a data point scores it.

The divergence is exact: a forward-mode (tangent) pass propagates the D unit
directions e_d through the network next to the ordinary forward pass,

    linear:      z = h W + b          dz = dh W
    activation:  a = sigma(z)         da = sigma'(z) * dz

and reads div v = sum_d (J e_d)_d.  A field with a divergence is a compiled
function ``field(params, x, t, out_v, out_div)``; :func:`mlp_div_field` is the
network's, :func:`gaussian_field` a closed-form reference.

Precision: the augmented state [x, l] and the solver's arithmetic are float64;
the field runs in the dtype of its buffers.  The network's forward and tangent
passes run in float32 by default (its tanh vectorises, ``activations.py``; about
8x faster than float64 here) or in float64, the oracle the tests check the
float32 build against.  Fixed-step solves run chunks of particles on Numba's
threads, as the sampler does.
"""
import math

import numpy as np
from numba import njit

from fmnumpy.errors import FmnumpyError
from fmnumpy.nn.mlp import input_features, input_tangents
from fmnumpy.nn.tangents import divergence_from_jvp, jacobian_from_jvp, mlp_forward_jvp
from fmnumpy.ode.adaptive import SolveStats, dopri5
from fmnumpy.ode.solvers import METHODS, check_steps, rk_integrate, solve_in_chunks, tableau

LOGP_METHODS = METHODS + ("dopri5",)
LOG_2PI = math.log(2.0 * math.pi)
CHUNK = 2048          # particles per solve; bounds the (M B, H) tangent buffers
DTYPES = ("float32", "float64")


# ----------------------------------------------------------------------------
# forward-mode pass: each layer's forward with its tangent rule beside it
# ----------------------------------------------------------------------------
# The pass recomputes the forward itself (rather than calling mlp_forward) so
# that z, sigma(z) and sigma'(z) come from one evaluation per element; the
# tests check that its v equals fmnumpy.mlp.mlp_forward's.


def mlp_div_params(theta, spec, batch, dtype=np.float64):
    """The params tuple of :func:`mlp_div_field` for ``batch`` particles:
    (theta, sizes, kind, feats, X, A, U, T1, T2), all arrays in ``dtype``."""
    theta = np.ascontiguousarray(theta, dtype=dtype)
    return div_buffers(theta, spec.sizes, spec.kind, spec.feats, int(batch), spec.dim)


@njit(cache=True)
def div_buffers(theta, sizes, kind, feats, B, D):
    """:func:`mlp_div_field`'s params for B particles of dimension D, buffers in
    theta's dtype: the tangents U (D, B, E) of X's first E columns (the unit
    directions e_d; the field recomputes them where x has plane-wave features,
    ``mlp.input_tangents``) and the workspaces X, A, T1, T2."""
    width = 0
    hsum = 0
    for l in range(1, sizes.shape[0]):
        width = max(width, sizes[l])
        hsum += sizes[l]
    n_freq, K, b = feats
    U = np.zeros((D, B, D + 2 * K * b.shape[0]), dtype=theta.dtype)
    for d in range(D):
        for i in range(B):
            U[d, i, d] = 1.0                           # U[d, i] = e_d
    return (theta, sizes, kind, feats, np.zeros((B, sizes[0]), dtype=theta.dtype),
            np.zeros(B * hsum, dtype=theta.dtype), U,
            np.zeros(D * B * width, dtype=theta.dtype),
            np.zeros(D * B * width, dtype=theta.dtype))


@njit(cache=True)
def mlp_div_field(params, x, t, out_v, out_div):
    """The network as a field with its exact divergence:
    out_v = v(x, t) (B, D), out_div = div_x v(x, t) (B,)."""
    theta, sizes, kind, feats, X, A, U, T1, T2 = params
    input_features(x, t, feats, X)
    if feats[1] > 0:
        input_tangents(X, feats, U)
    v, JU = mlp_forward_jvp(theta, sizes, kind, X, A, U, T1, T2)
    out_v[:] = v
    divergence_from_jvp(JU, out_div)


def mlp_jacobian(theta, spec, x, t):
    """v (B, D), the Jacobian J (B, D, D) with J[i, k, d] = dv_k/dx_d, and
    div v (B,) at particles x (B, D) and time t (scalar or (B,)), in float64."""
    x = _check_points(x, spec, "x")
    B = x.shape[0]
    params = mlp_div_params(theta, spec, B)
    theta64, sizes, kind, feats, X, A, U, T1, T2 = params
    tt = np.broadcast_to(np.asarray(t, dtype=np.float64), (B,)).copy()
    input_features(x, tt, feats, X)
    input_tangents(X, feats, U)
    v, JU = mlp_forward_jvp(theta64, sizes, kind, X, A, U, T1, T2)
    J = np.empty((B, spec.dim, spec.dim))
    div = np.empty(B)
    jacobian_from_jvp(JU, J)
    divergence_from_jvp(JU, div)
    return v.copy(), J, div


# ----------------------------------------------------------------------------
# a closed-form reference: N(0, I) -> N(mu, s^2 I) along the straight path
# ----------------------------------------------------------------------------

@njit(cache=True)
def gaussian_field(params, x, t, out_v, out_div):
    """Marginal velocity of the straight path from N(0, I) to N(mu, s^2 I)
    (``docs/likelihood.md#a-closed-form-check``): x_t ~ N(t mu, sigma_t^2 I),
    sigma_t^2 = (1 - t)^2 + t^2 s^2, and

        v(x, t) = mu + (sigma_t'/sigma_t) (x - t mu),   div v = D sigma_t'/sigma_t,

    with sigma_t'/sigma_t = (t s^2 - (1 - t)) / sigma_t^2.  params = (mu (D,), s)."""
    mu, s = params
    B, D = x.shape
    for i in range(B):
        ti = t[i]
        rate = (ti * s * s - (1.0 - ti)) / ((1.0 - ti) ** 2 + ti * ti * s * s)
        for d in range(D):
            out_v[i, d] = mu[d] + rate * (x[i, d] - ti * mu[d])
        out_div[i] = D * rate


def gaussian_logpdf(x, mu=0.0, s=1.0):
    """log N(x; mu, s^2 I) for x (B, D) -> (B,)."""
    x = np.asarray(x, dtype=np.float64)
    D = x.shape[1]
    r = (x - mu) / s
    return -0.5 * np.sum(r * r, axis=1) - D * math.log(s) - 0.5 * D * LOG_2PI


# ----------------------------------------------------------------------------
# the augmented field and the solve
# ----------------------------------------------------------------------------

_AUGMENTED = {}


def augmented(field):
    """The compiled field of s = [x, l] (B, D + 1): ds/dt = [v, -div v], built
    from ``field(params, x, t, out_v, out_div)``.  Its params are
    (params, x, v, div) with buffers x, v (B, D) and div (B,) in the field's
    dtype (s stays float64).  One build (and one compilation) per field."""
    aug = _AUGMENTED.get(field)
    if aug is None:
        @njit
        def aug(aparams, s, t, out):
            params, x, v, div = aparams
            B, D = x.shape
            for i in range(B):
                for d in range(D):
                    x[i, d] = s[i, d]
            field(params, x, t, v, div)
            for i in range(B):
                for d in range(D):
                    out[i, d] = v[i, d]
                out[i, D] = -div[i]                    # d/dt log p_t(x_t) = -div v
        _AUGMENTED[field] = aug
    return aug


def check_method(method):
    key = str(method).lower()
    if key not in LOGP_METHODS:
        raise FmnumpyError(f"unknown method {method!r}; choose one of: "
                           + ", ".join(LOGP_METHODS))
    return key


def integrate_logp(field, params, x, l, t0=0.0, t1=1.0, method="rk4", steps=100,
                   rtol=1e-5, atol=1e-5, norm="rms", dtype=np.float64):
    """Solve dx/dt = v, dl/dt = -div v from (x, l) at t0 to t1 (either direction).

    x (B, D), l (B,); the state is float64 and the field's buffers x, v, div are
    ``dtype`` (its params' dtype).  ``method`` is a fixed-step tableau name (then
    ``steps`` equal steps) or "dopri5" (then rtol/atol; the error norm covers
    l as well as x).  Returns x(t1), l(t1), SolveStats.
    """
    method = check_method(method)
    x = np.ascontiguousarray(x, dtype=np.float64)
    B, D = x.shape
    s = np.empty((B, D + 1))
    s[:, :D] = x
    s[:, D] = l
    aparams = (params, np.zeros((B, D), dtype=dtype), np.zeros((B, D), dtype=dtype),
               np.zeros(B, dtype=dtype))
    aug = augmented(field)
    if method == "dopri5":
        s, stats = dopri5(aug, aparams, s, t0, t1, rtol, atol, norm=norm)
    else:
        steps = check_steps(steps)
        tab = tableau(method)
        K = np.zeros((tab.stages, B, D + 1))
        rk_integrate(aug, aparams, s, (float(t0), float(t1), steps), (tab.c, tab.A, tab.b),
                     (K, np.zeros((B, D + 1)), np.zeros(B)), NO_RECORD)
        stats = SolveStats(steps * tab.stages, steps, 0)
    return s[:, :D].copy(), s[:, D].copy(), stats


NO_RECORD = (np.empty((0, 0, 0)), np.zeros(0, dtype=np.int64))


def _check_points(x, spec, name):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != spec.dim:
        raise FmnumpyError(f"{name} must have shape (N, {spec.dim}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise FmnumpyError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x, dtype=np.float64)


def check_dtype(dtype):
    """np.float32 or np.float64 from a name or dtype; anything else raises."""
    name = np.dtype(dtype).name if isinstance(dtype, (type, np.dtype)) else str(dtype)
    if name not in DTYPES:
        raise FmnumpyError(f"dtype must be one of: {', '.join(DTYPES)}; got {dtype!r}")
    return np.dtype(name).type


def _solve_chunks(theta, spec, x, l, t0, t1, method, steps, rtol, atol, norm, chunk, dtype,
                  cond=None):
    """integrate_logp of the network, the particles split into chunks of at most
    ``chunk`` solved on Numba's number of threads (the compiled solvers release the
    GIL; BLAS is single-threaded meanwhile, as in the sampler); the network runs in
    ``dtype``, stats are summed over chunks.  ``cond`` (N, W): a conditional network's
    input block of each particle (a label's one-hot or a condition's block), written
    once into the chunk's X after the time features, which the field's
    ``input_features`` leaves as they are; its tangents are zero."""
    method = check_method(method)
    dtype = check_dtype(dtype)
    if method != "dopri5":
        check_steps(steps)
    theta = np.ascontiguousarray(theta, dtype=dtype)          # cast once, not per chunk
    N = x.shape[0]
    x_end, l_end = np.empty_like(x), np.empty(N)

    def solve(lo, hi):
        params = mlp_div_params(theta, spec, hi - lo, dtype)
        if cond is not None:
            off = spec.label_offset
            params[4][:, off:off + cond.shape[1]] = cond[lo:hi]
        x_end[lo:hi], l_end[lo:hi], st = integrate_logp(
            mlp_div_field, params, x[lo:hi], l[lo:hi], t0, t1, method, steps, rtol, atol,
            norm, dtype)
        return st

    stats = solve_in_chunks(N, chunk, solve)
    return x_end, l_end, SolveStats(*(sum(st[k] for st in stats) for k in range(3)))


def _solve(theta, spec, x, l, t0, t1, method, steps, rtol, atol, norm, chunk, dtype,
           device, cond=None):
    """(x(t1), l(t1), SolveStats) on ``device``: the chunked CPU solve, or the
    fused GPU kernel (``cuda/likelihood.py``: fixed steps, the network in float32,
    l in float64)."""
    if device == "cpu":
        return _solve_chunks(theta, spec, x, l, t0, t1, method, steps, rtol, atol, norm,
                             chunk, dtype, cond)
    if device != "cuda":
        raise FmnumpyError(f"unknown device {device!r}; choose one of: cpu, cuda")
    if cond is not None:
        raise FmnumpyError("the GPU likelihood is unconditional; use device='cpu' for the "
                           "log-density of a conditional model")
    if check_method(method) == "dopri5":
        raise FmnumpyError("the GPU likelihood takes the fixed-step methods; "
                           "use device='cpu' for dopri5")
    if check_dtype(dtype) != np.float32:
        raise FmnumpyError("the GPU runs the network in float32; the float64 oracle is "
                           "device='cpu'")
    from fmnumpy.euclidean.cuda import cuda_solve_logp
    steps = check_steps(steps)
    xe, le = cuda_solve_logp(theta, spec, x, l, method, steps, t0, t1)
    return xe.astype(np.float64), le, SolveStats(steps * tableau(method).stages, steps, 0)


def sample_with_logprob(theta, spec, x0, method="rk4", steps=100, rtol=1e-5, atol=1e-5,
                        norm="rms", chunk=CHUNK, return_stats=False, dtype=np.float32,
                        device="cpu", cond=None):
    """Push x0 (N, D) from t = 0 to 1 and return the samples x1 (N, D) and
    log p_1(x1) (N,) = log N(x0; 0, I) - int_0^1 div v(x_t, t) dt, from one
    solve of the augmented state (float64; the network in ``dtype``) on ``device``.
    With ``return_stats`` also the SolveStats (summed over chunks of ``chunk``
    particles).  ``cond``: a conditional network's input blocks (:func:`_solve_chunks`)."""
    x0 = _check_points(x0, spec, "x0")
    l0 = gaussian_logpdf(x0)
    x1, l1, stats = _solve(theta, spec, x0, l0, 0.0, 1.0, method, steps, rtol, atol, norm,
                           chunk, dtype, device, cond)
    return (x1, l1, stats) if return_stats else (x1, l1)


def log_prob(theta, spec, x, method="rk4", steps=100, rtol=1e-5, atol=1e-5, norm="rms",
             chunk=CHUNK, return_stats=False, dtype=np.float32, device="cpu", cond=None):
    """log p_1(x) (N,) of data points x (N, D) under the flow: solve backwards
    from t = 1 to 0 with l(1) = 0, so l(0) = int_0^1 div v(x_t, t) dt, and
    return log N(x(0); 0, I) - l(0) (float64; the network in ``dtype``) on
    ``device``.  With ``return_stats`` also the SolveStats.  ``cond``: a conditional
    network's input blocks (:func:`_solve_chunks`), log p(x | c)."""
    x = _check_points(x, spec, "x")
    xz, lz, stats = _solve(theta, spec, x, np.zeros(x.shape[0]), 1.0, 0.0, method, steps,
                           rtol, atol, norm, chunk, dtype, device, cond)
    logp = gaussian_logpdf(xz) - lz
    return (logp, stats) if return_stats else logp


def density_grid(theta, spec, lim=4.0, n_grid=200, method="rk4", steps=100, rtol=1e-5,
                 atol=1e-5, norm="rms", chunk=CHUNK, dtype=np.float32, device="cpu"):
    """log p_1 on the cell centres of an n_grid x n_grid partition of a 2-D box.

    ``lim`` is L (the box [-L, L]^2) or ((x_lo, x_hi), (y_lo, y_hi)).  Returns
    gx (n_grid,), gy (n_grid,) and logp (n_grid, n_grid) with logp[i, j] =
    log p(gx[j], gy[i]) (rows are y, as ``imshow``/``pcolormesh`` expect), so
    exp(logp).sum() * dx * dy is the midpoint rule for the mass in the box.
    """
    if spec.dim != 2:
        raise FmnumpyError(f"density_grid needs 2-D data, the model has D={spec.dim}")
    n_grid = int(n_grid)
    if n_grid < 1:
        raise FmnumpyError(f"n_grid must be a positive integer, got {n_grid}")
    if np.ndim(lim) == 0:
        (x_lo, x_hi), (y_lo, y_hi) = (-lim, lim), (-lim, lim)
    else:
        (x_lo, x_hi), (y_lo, y_hi) = lim
    if not (x_hi > x_lo and y_hi > y_lo):
        raise FmnumpyError(f"lim must describe a box with positive sides, got {lim!r}")
    gx = x_lo + (np.arange(n_grid) + 0.5) * (x_hi - x_lo) / n_grid
    gy = y_lo + (np.arange(n_grid) + 0.5) * (y_hi - y_lo) / n_grid
    pts = np.stack(np.meshgrid(gx, gy, indexing="xy"), axis=-1).reshape(-1, 2)
    logp = log_prob(theta, spec, pts, method, steps, rtol, atol, norm, chunk, dtype=dtype,
                    device=device)
    return gx, gy, logp.reshape(n_grid, n_grid)
