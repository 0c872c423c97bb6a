"""Manifolds as data: Euclidean space, the unit sphere and the flat torus.

Dimension letters: B points, D coordinates (the sphere S^(D-1) is embedded in
R^D; the flat torus T^D is D angles in [0, 2 pi)).

A manifold is an integer ``code`` (EUCLIDEAN, SPHERE, TORUS) passed to compiled
functions, each of which writes every manifold's formula once, side by side
(``docs/manifolds.md``); ``CONTRACT`` at the end lists every operation a manifold
provides and where, ``MANIFOLDS`` the manifolds that provide them:

    op        Euclidean     sphere S^(D-1)                       torus T^D
    projx     x             x / |x|                              wrap(x)
    proju     u             u - (x . u) x                        u
    expmap    x + u         cos|u| x + sin|u| u / |u|            wrap(x + u)
    logmap    y - x         w e,  w = dist, e = unit(y - (x.y)x)  wrap_pi(y - x)
    dist      |y - x|       atan2(|y - (x.y) x|, x . y)           |wrap_pi(y - x)|

with wrap(a) = a - 2 pi floor(a / 2 pi) in [0, 2 pi) and wrap_pi(a) the
representative of a in [-pi, pi).  The geodesic from x0 to x1 and its velocity,
xt = exp_x0(t log_x0(x1)) and ut = d xt / dt, are :func:`geodesic`.

Every function takes (B, D) arrays and writes into a buffer the caller owns
(the output may be the input); the arithmetic is float64 whatever the arrays'
dtype.
"""
import math

import numpy as np
from numba import njit

from fmnumpy.errors import FmnumpyError

EUCLIDEAN, SPHERE, TORUS = 0, 1, 2
NAMES = ("euclidean", "sphere", "torus")
TWO_PI = 2.0 * math.pi
NORM_TOL = 1e-4          # a point is on the sphere when | |x| - 1 | <= NORM_TOL
TINY = 1e-12             # below this a tangent vector's length is treated as zero


def manifold_code(name):
    """EUCLIDEAN, SPHERE or TORUS from a name (case-insensitive)."""
    key = str(name).lower()
    if key not in NAMES:
        raise FmnumpyError(f"unknown manifold {name!r}; choose one of: {', '.join(NAMES)}")
    return NAMES.index(key)


# ----------------------------------------------------------------------------
# scalar and row formulas
# ----------------------------------------------------------------------------

@njit(cache=True, inline="always")
def wrap(a):
    """a modulo 2 pi, in [0, 2 pi)."""
    r = a - TWO_PI * math.floor(a / TWO_PI)
    return r if r < TWO_PI else 0.0            # a tiny negative a rounds up to 2 pi


@njit(cache=True, inline="always")
def wrap_pi(a):
    """The representative of the angle a in [-pi, pi)."""
    return a - TWO_PI * math.floor((a + math.pi) / TWO_PI)


@njit(cache=True, inline="always")
def row_dot(a, i, b, j):
    """a[i] . b[j] in float64."""
    acc = 0.0
    for d in range(a.shape[1]):
        acc += float(a[i, d]) * float(b[j, d])
    return acc


@njit(cache=True, inline="always")
def sphere_log_row(x, y, i, out):
    """out[i] = log_x(y) on the sphere and returns its length w = dist(x, y):
    r = y - (x . y) x is the part of y orthogonal to x, |r| = sin w, x . y = cos w."""
    c = row_dot(x, i, y, i)
    D = x.shape[1]
    r2 = 0.0
    for d in range(D):
        r = float(y[i, d]) - c * float(x[i, d])
        out[i, d] = r
        r2 += r * r
    s = math.sqrt(r2)
    w = math.atan2(s, c)
    if s <= TINY and c < 0.0:
        # y = -x: every direction is a shortest way; take e, the unit tangent toward
        # the axis least aligned with x, so that exp_x(pi e) = -x and |log| = dist = pi
        k = 0
        for d in range(1, D):
            if abs(float(x[i, d])) < abs(float(x[i, k])):
                k = d
        n2 = 0.0
        for d in range(D):
            e = (1.0 if d == k else 0.0) - float(x[i, k]) * float(x[i, d])
            out[i, d] = e
            n2 += e * e
        scale = math.pi / math.sqrt(n2)
        for d in range(D):
            out[i, d] *= scale
        return math.pi
    scale = w / s if s > TINY else 1.0          # w / sin w -> 1 as w -> 0
    for d in range(D):
        out[i, d] *= scale
    return w


# ----------------------------------------------------------------------------
# the operations, batched
# ----------------------------------------------------------------------------

@njit(cache=True)
def projx(code, x, out):
    """The nearest point of the manifold: x / |x| on the sphere, wrap(x) on the torus."""
    B, D = x.shape
    for i in range(B):
        if code == SPHERE:
            n = math.sqrt(row_dot(x, i, x, i))
            for d in range(D):
                out[i, d] = x[i, d] / n
        elif code == TORUS:
            for d in range(D):
                out[i, d] = wrap(float(x[i, d]))
        else:
            for d in range(D):
                out[i, d] = x[i, d]


@njit(cache=True)
def proju(code, x, u, out):
    """The projection P(x) u onto the tangent space at x: u - (x . u) x on the
    sphere (P(x) = I - x x^T, symmetric), u itself on the flat spaces."""
    B, D = x.shape
    for i in range(B):
        if code == SPHERE:
            c = row_dot(x, i, u, i)
            for d in range(D):
                out[i, d] = u[i, d] - c * x[i, d]
        else:
            for d in range(D):
                out[i, d] = u[i, d]


@njit(cache=True)
def expmap(code, x, u, out):
    """exp_x(u) for a tangent vector u at x: the point reached at time 1 along
    the geodesic leaving x with velocity u."""
    B, D = x.shape
    for i in range(B):
        if code == SPHERE:
            n = math.sqrt(row_dot(u, i, u, i))
            cn = math.cos(n)
            sn = math.sin(n) / n if n > TINY else 1.0
            for d in range(D):
                out[i, d] = cn * x[i, d] + sn * u[i, d]
        elif code == TORUS:
            for d in range(D):
                out[i, d] = wrap(float(x[i, d]) + float(u[i, d]))
        else:
            for d in range(D):
                out[i, d] = x[i, d] + u[i, d]


@njit(cache=True)
def logmap(code, x, y, out):
    """log_x(y): the tangent vector at x whose geodesic reaches y at time 1 by the
    shortest way (on the sphere, for antipodal y one of the shortest ways: pi times a
    unit tangent, so |log_x(y)| = dist(x, y) = pi)."""
    B, D = x.shape
    for i in range(B):
        if code == SPHERE:
            sphere_log_row(x, y, i, out)
        elif code == TORUS:
            for d in range(D):
                out[i, d] = wrap_pi(float(y[i, d]) - float(x[i, d]))
        else:
            for d in range(D):
                out[i, d] = y[i, d] - x[i, d]


@njit(cache=True, inline="always")
def dist_rows(code, x, i, y, j):
    """Geodesic distance d(x_i, y_j)."""
    D = x.shape[1]
    if code == SPHERE:
        c = row_dot(x, i, y, j)
        r2 = 0.0
        for d in range(D):
            r = float(y[j, d]) - c * float(x[i, d])
            r2 += r * r
        return math.atan2(math.sqrt(r2), c)
    acc = 0.0
    for d in range(D):
        a = float(y[j, d]) - float(x[i, d])
        if code == TORUS:
            a = wrap_pi(a)
        acc += a * a
    return math.sqrt(acc)


@njit(cache=True)
def dist(code, x, y, out):
    """Geodesic distance out[i] = d(x_i, y_i) (B,)."""
    for i in range(x.shape[0]):
        out[i] = dist_rows(code, x, i, y, i)


@njit(cache=True)
def sq_dist_matrix(code, x, y, C):
    """C[i, j] = d(x_i, y_j)^2 (N, M): the cost of the geodesic W2."""
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            r = dist_rows(code, x, i, y, j)
            C[i, j] = r * r


@njit(cache=True)
def geodesic(code, x0, x1, t, xt, ut):
    """xt = exp_x0(t log_x0(x1)) and ut = d xt / dt for x0, x1 (B, D), t (B,).

    Sphere (slerp): with w = d(x0, x1) and e the unit vector of log_x0(x1),
        xt = cos(t w) x0 + sin(t w) e,      ut = w (cos(t w) e - sin(t w) x0),
    so |ut| = w and ut is tangent at xt.  Torus: u = wrap_pi(x1 - x0),
    xt = wrap(x0 + t u), ut = u.  Euclidean: the straight path
    xt = (1 - t) x0 + t x1, ut = x1 - x0.  ut is written first, as scratch for
    log_x0(x1)."""
    B, D = x0.shape
    for i in range(B):
        ti = float(t[i])
        if code == SPHERE:
            w = sphere_log_row(x0, x1, i, ut)                 # ut = w e
            ct, st = math.cos(ti * w), math.sin(ti * w)
            for d in range(D):
                we = float(ut[i, d])
                xt[i, d] = ct * x0[i, d] + (st / w if w > TINY else ti) * we
                ut[i, d] = ct * we - w * st * x0[i, d]
        elif code == TORUS:
            for d in range(D):
                u = wrap_pi(float(x1[i, d]) - float(x0[i, d]))
                xt[i, d] = wrap(float(x0[i, d]) + ti * u)
                ut[i, d] = u
        else:
            for d in range(D):
                xt[i, d] = (1.0 - ti) * x0[i, d] + ti * x1[i, d]
                ut[i, d] = x1[i, d] - x0[i, d]


# ----------------------------------------------------------------------------
# measure: the prior and the volume
# ----------------------------------------------------------------------------

def log_volume(code, dim):
    """log of the total volume: |S^(D-1)| = 2 pi^(D/2) / Gamma(D/2); |T^D| = (2 pi)^D."""
    if code == SPHERE:
        return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)
    if code == TORUS:
        return dim * math.log(TWO_PI)
    raise FmnumpyError("Euclidean space has infinite volume")


def sample_prior(code, n, dim, rng, dtype=np.float64):
    """n points (n, D) of the prior: uniform on the sphere (a normalised Gaussian,
    rotation invariant) and on the torus; N(0, I) on Euclidean space."""
    if code == SPHERE:
        z = rng.standard_normal((n, dim))
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        return z.astype(dtype)
    if code == TORUS:
        return rng.uniform(0.0, TWO_PI, (n, dim)).astype(dtype)
    return rng.standard_normal((n, dim)).astype(dtype)


def prior_log_density(code, x):
    """log p0(x) (B,): -log volume on the compact manifolds, log N(x; 0, I) on R^D."""
    x = np.asarray(x, dtype=np.float64)
    B, D = x.shape
    if code == EUCLIDEAN:
        return -0.5 * np.sum(x * x, axis=1) - 0.5 * D * math.log(TWO_PI)
    return np.full(B, -log_volume(code, D))


def check_points(code, x, dim=None, where="data", tol=NORM_TOL):
    """x as a float64 (N, D) array on the manifold, else one FmnumpyError line
    naming the first bad row: the shape, a non-finite value, a sphere point
    whose norm is not 1 within ``tol``, or a sphere of dimension < 2.  Torus
    angles may be any finite numbers; they are wrapped into [0, 2 pi)."""
    name = NAMES[code]
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise FmnumpyError(f"{where} must be a non-empty (N, D) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise FmnumpyError(f"{where} has D = {x.shape[1]} columns, the {name} model {dim}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise FmnumpyError(f"{where} must hold real numbers, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FmnumpyError(f"{where} row {i} is not finite: {x[i].tolist()}")
    if code == SPHERE:
        if x.shape[1] < 2:
            raise FmnumpyError(f"{where}: points of the sphere need D >= 2 coordinates "
                               f"(S^(D-1) in R^D), got D = {x.shape[1]}")
        norm = np.linalg.norm(x, axis=1)
        bad = np.abs(norm - 1.0) > tol
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FmnumpyError(f"{where} row {i} is not on the unit sphere: its norm is "
                               f"{norm[i]:.6g} (tolerance {tol:g}); divide the rows by "
                               "their norms")
        return x / norm[:, None]
    if code == TORUS:
        return np.mod(x, TWO_PI) % TWO_PI
    return x


# ----------------------------------------------------------------------------
# the manifold contract
# ----------------------------------------------------------------------------
# What every manifold provides (docs/manifolds.md#the-manifold-contract): each
# operation is the function named here, which writes each manifold's formula as a
# branch on its code.  A new manifold is one entry of MANIFOLDS, its branch in each of
# these functions, and the tests parametrised over MANIFOLDS (tests/test_manifolds.py,
# ``test_contract_*``) that check every operation's defining identities.
CONTRACT = {
    "projx": ("manifold.manifolds.projx", "the nearest point of the manifold"),
    "proju": ("manifold.manifolds.proju", "P(x) u: the projection onto the tangent space"),
    "expmap": ("manifold.manifolds.expmap", "exp_x(u): where the geodesic with velocity u "
               "is at time 1"),
    "logmap": ("manifold.manifolds.logmap", "log_x(y): the shortest tangent vector with "
               "exp_x(log_x(y)) = y"),
    "dist": ("manifold.manifolds.dist", "the geodesic distance, |log_x(y)|"),
    "geodesic": ("manifold.manifolds.geodesic", "xt and ut of the conditional path"),
    "uniform": ("manifold.manifolds.sample_prior", "the uniform draw (the source)"),
    "log_volume": ("manifold.manifolds.log_volume", "log of the total volume: log p0 = "
                   "-log_volume"),
    "check": ("manifold.manifolds.check_points", "user points validated, one line for a bad row"),
    "features": ("manifold.riemannian.manifold_features", "the network's embedding of a point"),
    "feature_tangents": ("manifold.solvers.embedding_tangents", "d embed(x) / dx_d, for the "
                         "divergence"),
    "divergence": ("manifold.solvers.net_div_field", "div_M of v = P(x) m from tr J_m: the "
                   "manifold's correction term"),
}
MANIFOLDS = {"sphere": SPHERE, "torus": TORUS}     # name -> code; each provides CONTRACT
