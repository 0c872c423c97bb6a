"""Toy distributions on the sphere S^2 and the flat torus T^2, with exact densities.

Dimension letters: N points, D coordinates (3 on S^2, 2 angles on T^2).

    vmf                  a mixture of 5 von Mises-Fisher blobs on S^2 (kappa 40)
    sphere_checkerboard  uniform on half of an 8 x 4 grid of equal-area cells of S^2
                         (longitude x sin latitude), alternate cells
    wrapped_gmm          a mixture of 4 Gaussians of angles wrapped onto T^2, one of
                         them across the corner (0, 0)
    torus_checkerboard   uniform on alternate cells of a 4 x 4 grid of T^2

Each has a sampler ``f(n, rng) -> (n, D)`` and an exact log-density with respect
to the manifold's volume (area on S^2, d theta_1 d theta_2 on T^2), used for the
density maps and the likelihood checks.
"""
import math

import numpy as np

from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.manifold.manifolds import SPHERE, TORUS, TWO_PI

VMF_KAPPA = 40.0
VMF_LONLAT = ((0.0, 0.9), (1.3, 0.1), (2.6, -0.6), (4.0, 0.4), (5.2, -1.1))   # radians
GMM_CENTRES = ((0.2, 0.3), (2.4, 1.6), (4.2, 4.4), (1.6, 4.6))
GMM_STD = 0.35
WRAP_RANGE = 3                       # images k in [-3, 3] of the wrapped density's sum


def lonlat_to_xyz(lon, lat):
    """Unit vectors (..., 3) from longitude and latitude (radians)."""
    c = np.cos(lat)
    return np.stack([c * np.cos(lon), c * np.sin(lon), np.sin(lat)], axis=-1)


def xyz_to_lonlat(x):
    """(lon in [-pi, pi), lat in [-pi/2, pi/2]) of unit vectors x (..., 3)."""
    x = np.asarray(x, dtype=np.float64)
    lon = np.arctan2(x[..., 1], x[..., 0])
    lat = np.arcsin(np.clip(x[..., 2], -1.0, 1.0))
    return lon, lat


def _vmf_means():
    return lonlat_to_xyz(*np.array(VMF_LONLAT).T)               # (K, 3)


def vmf(n, rng):
    """n points of the vMF mixture (equal weights).  One vMF draw on S^2 in closed
    form: w = mu . x = 1 + log(u + (1 - u) e^(-2 kappa)) / kappa, the rest of x
    uniform on the circle orthogonal to mu."""
    mu = _vmf_means()
    k = rng.integers(0, mu.shape[0], n)
    u = rng.random(n)
    w = 1.0 + np.log(u + (1.0 - u) * math.exp(-2.0 * VMF_KAPPA)) / VMF_KAPPA
    z = rng.standard_normal((n, 3))
    m = mu[k]
    z -= np.sum(z * m, axis=1, keepdims=True) * m                 # orthogonal to mu
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    x = w[:, None] * m + np.sqrt(np.maximum(0.0, 1.0 - w * w))[:, None] * z
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def vmf_log_density(x):
    """log of (1/K) sum_k kappa / (4 pi sinh kappa) exp(kappa mu_k . x)."""
    mu = _vmf_means()
    a = VMF_KAPPA * (np.asarray(x, np.float64) @ mu.T - 1.0)      # <= 0: no overflow
    # kappa / (4 pi sinh kappa) e^kappa = kappa / (2 pi (1 - e^(-2 kappa)))
    logc = math.log(VMF_KAPPA / (2.0 * math.pi * -math.expm1(-2.0 * VMF_KAPPA)))
    return logc + np.log(np.mean(np.exp(a), axis=1))


def _sphere_cell(x):
    """Cell indices (i along longitude of 8, j along sin latitude of 4)."""
    lon = np.mod(np.arctan2(x[:, 1], x[:, 0]), TWO_PI)
    i = np.minimum((lon / (TWO_PI / 8)).astype(np.int64), 7)
    j = np.minimum(((np.clip(x[:, 2], -1, 1) + 1.0) / 0.5).astype(np.int64), 3)
    return i, j


def sphere_checkerboard(n, rng):
    """Uniform on the cells with i + j even: z = sin(lat) and lon uniform in a cell
    give the uniform area measure (Archimedes)."""
    cell = rng.integers(0, 16, n)                    # 16 of the 32 cells
    i = cell % 8
    j = 2 * (cell // 8) + (i % 2)                    # i + j even
    lon = (i + rng.random(n)) * (TWO_PI / 8)
    z = -1.0 + (j + rng.random(n)) * 0.5
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    return np.stack([r * np.cos(lon), r * np.sin(lon), z], axis=1)


def sphere_checkerboard_log_density(x):
    """log(1 / (2 pi)) on the chosen half of the sphere (area 2 pi), -inf elsewhere."""
    i, j = _sphere_cell(np.asarray(x, np.float64))
    return np.where((i + j) % 2 == 0, -math.log(TWO_PI), -np.inf)


def wrapped_gmm(n, rng):
    """n points of the 4-mode Gaussian mixture, angles taken modulo 2 pi."""
    c = np.array(GMM_CENTRES)
    k = rng.integers(0, c.shape[0], n)
    return np.mod(c[k] + GMM_STD * rng.standard_normal((n, 2)), TWO_PI)


def wrapped_gmm_log_density(x):
    """log of (1/K) sum_k prod_d sum_j N(x_d + 2 pi j; c_kd, s^2), |j| <= 3."""
    x = np.asarray(x, np.float64)
    c = np.array(GMM_CENTRES)
    j = np.arange(-WRAP_RANGE, WRAP_RANGE + 1) * TWO_PI
    r = (x[:, None, :, None] + j - c[None, :, :, None]) / GMM_STD   # (N, K, D, J)
    per_dim = np.exp(-0.5 * r * r).sum(axis=3) / (GMM_STD * math.sqrt(TWO_PI))
    return np.log(per_dim.prod(axis=2).mean(axis=1))


def torus_checkerboard(n, rng):
    """Uniform on the cells (i, j) of a 4 x 4 grid of [0, 2 pi)^2 with i + j even."""
    cell = rng.integers(0, 8, n)
    i = cell % 4
    j = 2 * (cell // 4) + (i % 2)
    side = TWO_PI / 4
    return np.stack([(i + rng.random(n)) * side, (j + rng.random(n)) * side], axis=1)


def torus_checkerboard_log_density(x):
    """log(1 / (2 pi^2)) on half of the torus (area 2 pi^2), -inf elsewhere."""
    ij = np.minimum((np.mod(np.asarray(x, np.float64), TWO_PI) / (TWO_PI / 4)).astype(int), 3)
    return np.where(ij.sum(axis=1) % 2 == 0, -math.log(2.0 * math.pi ** 2), -np.inf)


DATASETS = {
    "vmf": (SPHERE, 3, vmf, vmf_log_density),
    "sphere_checkerboard": (SPHERE, 3, sphere_checkerboard, sphere_checkerboard_log_density),
    "wrapped_gmm": (TORUS, 2, wrapped_gmm, wrapped_gmm_log_density),
    "torus_checkerboard": (TORUS, 2, torus_checkerboard, torus_checkerboard_log_density),
}
DEFAULT_DATASET = {SPHERE: "vmf", TORUS: "wrapped_gmm"}


def check_name(name):
    if name not in DATASETS:
        raise FmnumpyError(f"unknown manifold dataset {name!r}; choose one of: "
                           + ", ".join(DATASETS))
    return name


def names_on(manifold):
    """The dataset names on the manifold called ``manifold`` ("sphere" or "torus")."""
    code = {"sphere": SPHERE, "torus": TORUS}.get(manifold)
    return [k for k, v in DATASETS.items() if v[0] == code]


def manifold_of(name):
    """The manifold code of a named dataset."""
    return DATASETS[check_name(name)][0]


def sample(name, n, rng):
    """n points (n, D) of the named dataset drawn with ``rng``."""
    return DATASETS[check_name(name)][2](positive_int("n", n), rng)


def log_density(name, x):
    """The exact log-density (N,) of the named dataset at x (N, D)."""
    return DATASETS[check_name(name)][3](x)


# ---- latitude and longitude ----------------------------------------------------------
# Catalogues of events on the earth come as latitude, longitude in degrees.  A point is
# the unit vector x = (cos lat cos lon, cos lat sin lon, sin lat) (``lonlat_to_xyz``).

def latlon_to_sphere(lat, lon):
    """Unit vectors (N, 3) from latitudes and longitudes (N,) in degrees."""
    return lonlat_to_xyz(np.radians(np.asarray(lon, dtype=np.float64)),
                         np.radians(np.asarray(lat, dtype=np.float64)))


def sphere_to_latlon(x):
    """(lat in [-90, 90], lon in [-180, 180)) in degrees of unit vectors x (N, 3)."""
    lon, lat = xyz_to_lonlat(x)
    return np.degrees(lat), np.degrees(lon)


def read_latlon(path):
    """(lat (N,), lon (N,)) in degrees from a CSV of latitude, longitude per line: `#`
    lines are comments, blank lines are skipped, a first line without numbers is a
    header.  A row that is not two numbers, or has |lat| > 90 or |lon| > 360, is one
    FmnumpyError line naming the file's line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError:
        raise FmnumpyError(f"{path}: not a text file; write latitude,longitude per line")
    rows, seen_data = [], False
    for no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split(",")]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not seen_data and not any(_is_number(f) for f in fields):
                seen_data = True                         # the header
                continue
            raise FmnumpyError(f"{path}: line {no} is not two numbers (latitude,longitude "
                               f"in degrees): {text!r}") from None
        seen_data = True
        if len(values) != 2:
            raise FmnumpyError(f"{path}: line {no} has {len(values)} values; write "
                               "latitude,longitude in degrees")
        lat, lon = values
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise FmnumpyError(f"{path}: line {no} is not finite: {text!r}")
        if abs(lat) > 90.0:
            raise FmnumpyError(f"{path}: line {no} has latitude {lat:g}, outside [-90, 90]; "
                               "is the file longitude,latitude?")
        if abs(lon) > 360.0:
            raise FmnumpyError(f"{path}: line {no} has longitude {lon:g}, outside "
                               "[-360, 360]")
        rows.append(values)
    if len(rows) < 2:
        raise FmnumpyError(f"{path}: {len(rows)} rows of latitude,longitude; it needs at "
                           "least 2")
    a = np.array(rows, dtype=np.float64)
    return a[:, 0], a[:, 1]


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False
