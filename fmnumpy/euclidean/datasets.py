"""Toy distributions to learn (FFJORD conventions, seeded) and user data loading.

Dimension letters: N samples, D data dimension. Every sampler returns an (N, D)
``DTYPE`` array and takes an explicit ``numpy.random.Generator``; nothing here
touches NumPy's global random state.

The eight 2-D distributions use the constants of FFJORD's ``lib/toy_data.py``
(Grathwohl et al., 2019); where FFJORD called scikit-learn (moons, swissroll,
circles) the scikit-learn formula is written out here. Draw order differs from
FFJORD's ``RandomState`` calls, so the same seed gives other points from the
same distribution.
"""
import math
import os

import numpy as np
from numba import njit

from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError

TWO_PI = 2.0 * np.pi


def _as_rng(rng):
    """A ``numpy.random.Generator`` from a Generator or a non-negative int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise FmnumpyError(f"rng must be a numpy.random.Generator or a non-negative int seed, "
                       f"got {rng!r}; pass numpy.random.default_rng(seed)")


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FmnumpyError(f"number of samples must be a positive int, got {n!r}")
    return int(n)


def _shuffle(x, rng, y=None):
    """Rows of x (and of the labels y, with the same permutation) in random order."""
    p = rng.permutation(x.shape[0])
    return x[p] if y is None else (x[p], y[p])


def _labeled(x, y, labels):
    return (x, y) if labels else x


def _counts(fixed, rng, stratified):
    """Points per component: ``fixed`` (FFJORD's split of n) when stratified, else
    multinomial with equal weights, so that every point picks its component alone."""
    fixed = np.asarray(fixed)
    if stratified:
        return fixed
    k = fixed.size
    return rng.multinomial(int(fixed.sum()), np.full(k, 1.0 / k))


def _spread(count, stop, rng, stratified, endpoint=False):
    """``count`` positions on [0, stop]: FFJORD's even grid when stratified, else
    independent uniform draws."""
    if stratified:
        return np.linspace(0.0, stop, count, endpoint=endpoint)
    return rng.random(count) * stop


# ---- FFJORD's eight 2-D distributions: each (n, rng) -> (n, 2) float64 ----------

def spiral_point(u_s, u_x, u_y, u_arm, n_x, n_y):
    """One ``2spirals`` point (bench/README.md, Workloads) from four uniforms on [0, 1) and two
    standard normals: s = 3 pi sqrt(u_s) (540 degrees), arm point
    (-s cos s + u_x / 2, s sin s + u_y / 2), negated when u_arm >= 1/2, divided
    by 3, plus N(0, 0.1^2) noise.  Compiled for the CPU (:func:`two_spirals`)
    and for the GPU (``cuda/step.py`` draws the points on the device)."""
    s = math.sqrt(u_s) * 540.0 * 2.0 * math.pi / 360.0
    sign = 1.0 if u_arm < 0.5 else -1.0
    x = sign * (-math.cos(s) * s + u_x * 0.5) / 3.0 + 0.1 * n_x
    y = sign * (math.sin(s) * s + u_y * 0.5) / 3.0 + 0.1 * n_y
    return x, y


spiral_point_cpu = njit(cache=True, inline="always")(spiral_point)


@njit(cache=True)
def _spiral_points(u, noise, p, out):
    """out[j] = spiral_point of row p[j] (the rows in the order of the permutation p,
    gathered as they are made): u (m, 3) the uniforms of the m first-arm rows, rows
    m.. the second arm from the same uniforms; noise (n, 2) by row."""
    m = u.shape[0]
    for j in range(out.shape[0]):
        i = p[j]
        k = i if i < m else i - m
        arm = 0.0 if i < m else 1.0
        out[j, 0], out[j, 1] = spiral_point_cpu(u[k, 0], u[k, 1], u[k, 2], arm,
                                                noise[i, 0], noise[i, 1])


def two_spirals(n, rng, labels=False):
    """Two interleaved spirals (:func:`spiral_point`): the first (n + 1) // 2 rows
    on one arm, the rest on the other from the same uniforms; rows are shuffled.
    Label: the arm (0, 1).

    For odd n the second arm gets one point fewer.
    """
    m = (n + 1) // 2
    u = np.empty((m, 3))
    for c in range(3):                  # u_s, u_x, u_y: each drawn as one (m,) block
        u[:, c] = rng.random(m)
    noise = rng.standard_normal((n, 2))
    p = rng.permutation(n)              # the shuffle (_shuffle's draw), fused in the loop
    x = np.empty((n, 2))
    _spiral_points(u, noise, p, x)
    return (x, (p >= m).astype(np.int64)) if labels else x


EIGHT_CENTRES = 4.0 * np.array(
    [(1, 0), (-1, 0), (0, 1), (0, -1),
     (1 / np.sqrt(2), 1 / np.sqrt(2)), (1 / np.sqrt(2), -1 / np.sqrt(2)),
     (-1 / np.sqrt(2), 1 / np.sqrt(2)), (-1 / np.sqrt(2), -1 / np.sqrt(2))])  # (8, 2)


def eight_gaussians(n, rng, labels=False):
    """Equal mixture of N(c_k, 0.5^2 I) over 8 centres at radius 4, every 45
    degrees, all divided by 1.414 (FFJORD's constant, not sqrt(2) exactly).
    Label: the mode k (row k of ``EIGHT_CENTRES``)."""
    noise = rng.standard_normal((n, 2))
    k = rng.integers(0, 8, size=n)
    x = noise * 0.5 + EIGHT_CENTRES[k]
    return _labeled(x / 1.414, k.astype(np.int64), labels)


def checkerboard(n, rng):
    """Uniform on the 8 squares of a 4x4 board on [-4, 4)^2 whose integer cell
    indices (floor(x/2), floor(y/2)) have an even sum."""
    x1 = rng.random(n) * 4 - 2
    x2_ = rng.random(n) - rng.integers(0, 2, size=n) * 2
    x2 = x2_ + np.floor(x1) % 2
    return np.stack((x1, x2), axis=1) * 2


def moons(n, rng, labels=False, stratified=True):
    """scikit-learn ``make_moons(n, noise=0.1)``, then x * 2 + (-1, -0.2).

    Outer half circle (cos pi l, sin pi l) gets n // 2 points, inner
    (1 - cos pi l, 1/2 - sin pi l) the rest, l on an even grid in [0, 1]
    (``stratified=False``: each point picks its moon and l independently).
    Label: the moon (0 outer, 1 inner).
    """
    n_out, n_in = _counts((n // 2, n - n // 2), rng, stratified)
    l_out = _spread(n_out, np.pi, rng, stratified, endpoint=True)
    l_in = _spread(n_in, np.pi, rng, stratified, endpoint=True)
    x = np.vstack((np.stack((np.cos(l_out), np.sin(l_out)), axis=1),
                   np.stack((1 - np.cos(l_in), 1 - np.sin(l_in) - 0.5), axis=1)))
    x, y = _shuffle(x, rng, (np.arange(n) >= n_out).astype(np.int64))
    x = x + rng.normal(scale=0.1, size=(n, 2))
    return _labeled(x * 2 + np.array([-1.0, -0.2]), y, labels)


def pinwheel(n, rng, labels=False, stratified=True):
    """Five arms: radial N(1, 0.3^2), tangential N(0, 0.1^2), each point turned by
    its arm's angle 2*pi*k/5 plus 0.25 * exp(radial), then scaled by 2.

    FFJORD draws n // 5 per arm; here the first n % 5 arms get one more point so
    exactly n come back (identical counts when 5 divides n); ``stratified=False``:
    each point picks its arm independently. Rows are shuffled.
    Label: the arm k.
    """
    num_classes, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    rads = np.linspace(0, TWO_PI, num_classes, endpoint=False)
    counts = _counts(n // num_classes + (np.arange(num_classes) < n % num_classes), rng,
                     stratified)
    arm = np.repeat(np.arange(num_classes), counts).astype(np.int64)  # (n,)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    angles = rads[arm] + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles),
                          np.sin(angles), np.cos(angles)]).T.reshape(-1, 2, 2)  # (n, 2, 2)
    x, y = _shuffle(np.einsum("ti,tij->tj", features, rotations), rng, arm)
    return _labeled(2 * x, y, labels)


def rings(n, rng, labels=False, stratified=True):
    """Four concentric rings of radius 3, 2.25, 1.5, 0.75 (FFJORD's 1, 0.75, 0.5,
    0.25 times 3), evenly spaced angles, plus N(0, 0.08^2).

    The three outer rings get n // 4 points each, the innermost the rest
    (``stratified=False``: each point picks its ring and angle independently).
    Label: the ring (0 outermost .. 3 innermost).
    """
    q = n // 4
    counts = _counts((q, q, q, n - 3 * q), rng, stratified)
    parts, y = [], []
    for k, (radius, count) in enumerate(zip((1.0, 0.75, 0.5, 0.25), counts)):
        theta = _spread(count, TWO_PI, rng, stratified)
        parts.append(np.stack((np.cos(theta), np.sin(theta)), axis=1) * radius)
        y.append(np.full(count, k, dtype=np.int64))
    x, y = _shuffle(np.vstack(parts) * 3.0, rng, np.concatenate(y))
    return _labeled(x + rng.normal(scale=0.08, size=x.shape), y, labels)


def swissroll(n, rng):
    """scikit-learn ``make_swiss_roll(n, noise=1.0)``, columns (x, z), divided by 5:
    t = 1.5 pi (1 + 2u), (x, y, z) = (t cos t, 21 u', t sin t) + N(0, I)."""
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    y = 21.0 * rng.random(n)
    x = np.stack((t * np.cos(t), y, t * np.sin(t)), axis=1)          # (n, 3)
    x += rng.standard_normal((n, 3)) * 1.0
    return x[:, [0, 2]] / 5.0


def circles(n, rng, labels=False, stratified=True):
    """scikit-learn ``make_circles(n, factor=0.5, noise=0.08)`` times 3: radius 3
    with n // 2 points and radius 1.5 with the rest, evenly spaced angles
    (``stratified=False``: each point picks its circle and angle independently).
    Label: the circle (0 outer, 1 inner)."""
    counts = _counts((n // 2, n - n // 2), rng, stratified)
    parts = []
    for radius, count in zip((1.0, 0.5), counts):
        theta = _spread(count, TWO_PI, rng, stratified)
        parts.append(np.stack((np.cos(theta), np.sin(theta)), axis=1) * radius)
    x, y = _shuffle(np.vstack(parts), rng, np.repeat(np.arange(2), counts).astype(np.int64))
    x = x + rng.normal(scale=0.08, size=(n, 2))
    return _labeled(x * 3.0, y, labels)


SCURVE_NOISE, SCURVE_SCALE = 0.05, 1.5     # TorchCFM's N -> S-curve benchmark


def scurve(n, rng):
    """The S-curve of scikit-learn's ``make_s_curve(n, noise=0.05)``, columns 0 and
    2, times 1.5: t = 3 pi (u - 1/2), (x, y, z) = (sin t, 2 u', sign(t) (cos t - 1))
    plus N(0, 0.05^2 I), written from the formula."""
    t = 3.0 * np.pi * (rng.random(n) - 0.5)
    y = 2.0 * rng.random(n)
    x = np.stack((np.sin(t), y, np.sign(t) * (np.cos(t) - 1.0)), axis=1)    # (n, 3)
    x += SCURVE_NOISE * rng.standard_normal((n, 3))
    return x[:, [0, 2]] * SCURVE_SCALE


# ---- a high-dimensional test distribution -----------------------------------------

GMM_RADIUS = 4.0     # distance of every mode centre from the origin
GMM_STD = 0.5        # per-coordinate standard deviation inside a mode


def gmm_centres(dim, n_modes=8, radius=GMM_RADIUS):
    """(n_modes, D) mode centres, a closed form identical on every machine.

    Centre k is (-1)^k * radius * b_{k // 2}, with b_j the j-th orthonormal DCT-II
    vector b_j[d] = sqrt((2 - [j == 0]) / D) cos(pi (2d + 1) j / (2D)): antipodal
    pairs along orthogonal directions that touch every coordinate. Needs
    n_modes <= 2 * dim.
    """
    if n_modes < 1 or n_modes > 2 * dim:
        raise FmnumpyError(f"a {dim}-D mixture has room for 1 to {2 * dim} modes, "
                           f"got n_modes={n_modes}")
    j = np.arange(n_modes) // 2                                      # (n_modes,)
    d = np.arange(dim)                                               # (D,)
    b = np.cos(np.pi * (2 * d[None, :] + 1) * j[:, None] / (2 * dim))
    b *= np.sqrt(np.where(j == 0, 1.0, 2.0) / dim)[:, None]
    sign = np.where(np.arange(n_modes) % 2 == 0, 1.0, -1.0)
    return radius * sign[:, None] * b


def gaussian_mixture(n, rng, dim, n_modes=8, radius=GMM_RADIUS, std=GMM_STD):
    """(n, dim) draws from the equal-weight mixture of N(c_k, std^2 I) over the
    centres of :func:`gmm_centres`."""
    centres = gmm_centres(dim, n_modes, radius)
    k = rng.integers(0, n_modes, size=n)
    return centres[k] + std * rng.standard_normal((n, dim))


# ---- registry -------------------------------------------------------------------

_SAMPLERS = {
    "2spirals": two_spirals,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "moons": moons,
    "pinwheel": pinwheel,
    "rings": rings,
    "swissroll": swissroll,
    "circles": circles,
    "scurve": scurve,
    "gmm8d": lambda n, rng: gaussian_mixture(n, rng, dim=8),
    "gmm32d": lambda n, rng: gaussian_mixture(n, rng, dim=32),
}
_DIMS = {"gmm8d": 8, "gmm32d": 32}
# the toy sets with labels (sample(name, n, rng, labels=True)) and their class counts
CLASSES = {"2spirals": 2, "8gaussians": 8, "moons": 2, "pinwheel": 5, "rings": 4,
           "circles": 2}
DATASETS = tuple(_SAMPLERS)
# the sets whose draws are stratified (fixed counts per component, even grids)
STRATIFIED = ("moons", "pinwheel", "rings", "circles")


def _check_name(name, or_file=""):
    if name not in _SAMPLERS:
        raise FmnumpyError(f"unknown dataset {name!r}; choose one of "
                           f"{', '.join(DATASETS)}{or_file}")
    return name


def sample(name, n, rng, labels=False, stratified=True):
    """(n, D) ``DTYPE`` draws from the named distribution; rng: Generator or int seed.
    ``labels=True``: (x, y) with y (n,) int64 the class of each row (``CLASSES``:
    the mode, arm, moon, ring or circle); the x are the same draws either way.

    The sets in ``STRATIFIED`` split n over their components by fixed counts and
    (except pinwheel) place points on an even grid along each curve, as FFJORD and
    scikit-learn do; ``stratified=False`` draws every point independently from the
    same distribution instead (what a sampler of the distribution can at best
    produce; bench/iid_floor.py).  The other sets are independent draws either way."""
    fn = _SAMPLERS[_check_name(name)]
    kw = {} if name not in STRATIFIED else {"stratified": bool(stratified)}
    if not labels:
        return fn(_check_n(n), _as_rng(rng), **kw).astype(DTYPE)
    if name not in CLASSES:
        raise FmnumpyError(f"dataset {name!r} has no labels; the labelled ones are: "
                           + ", ".join(CLASSES))
    x, y = fn(_check_n(n), _as_rng(rng), labels=True, **kw)
    return x.astype(DTYPE), y


# ---- user data --------------------------------------------------------------------

def _check_table(x, path, unit):
    """Validate a loaded (N, D) array; ``unit(i)`` names 0-based row i for messages."""
    if x.dtype.kind not in "iuf":
        raise FmnumpyError(f"{path}: data must be real numbers, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] < 1:
        raise FmnumpyError(f"{path}: data must be a 2-D array (N samples, D dims), "
                           f"got shape {x.shape}; reshape it to (N, D)")
    if x.shape[0] < 2:
        raise FmnumpyError(f"{path}: need at least 2 rows of data, got {x.shape[0]}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(x, dtype=DTYPE)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise FmnumpyError(f"{path}: {unit(int(np.argmax(bad)))} holds NaN, inf or a value "
                           f"too large for float32; remove or fix that row")
    return out


def _read_csv(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().split("\n")   # universal newlines: one entry per line
    except UnicodeDecodeError:
        raise FmnumpyError(f"{path}: not a text file; save it as comma-separated numbers")
    rows, line_no = [], []           # fields of each data line, its 1-based line number
    for i, line in enumerate(lines, start=1):
        if line.strip():
            rows.append([f.strip() for f in line.split(",")])
            line_no.append(i)
    if rows and not any(_is_number(f) for f in rows[0]):
        rows, line_no = rows[1:], line_no[1:]       # a header line of names only
    if not rows:
        raise FmnumpyError(f"{path}: file is empty (no data rows); write one sample per "
                           f"line as comma-separated numbers")
    width = len(rows[0])
    for fields, i in zip(rows, line_no):
        if len(fields) != width:
            raise FmnumpyError(f"{path}: line {i} has {len(fields)} values but line "
                               f"{line_no[0]} has {width}; every row needs the same count")
    values = []
    for fields, i in zip(rows, line_no):
        try:
            values.append([float(f) for f in fields])
        except ValueError:
            bad = next(f for f in fields if not _is_number(f))
            raise FmnumpyError(f"{path}: line {i} has a non-numeric entry {bad!r}; only "
                               f"numbers are allowed after an optional header") from None
    x = np.array(values, dtype=np.float64)                          # (N, D)
    return _check_table(x, path, lambda r: f"line {line_no[r]}")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npy(path):
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FmnumpyError(f"{path}: cannot be read as a .npy array ({e}); "
                           f"save it with numpy.save") from None
    return _check_table(x, path, lambda r: f"row {r + 1}")


def load_data(path):
    """(N, D) ``DTYPE`` samples from a ``.npy`` or ``.csv`` file (N >= 2, D >= 1).

    A .csv holds one sample per line, comma-separated; blank lines are skipped, and
    a first line with no numeric field is taken as a header and skipped. Errors
    name the file and the first bad line (csv, 1-based physical line) or row
    (npy, 1-based).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".csv"):
        raise FmnumpyError(f"{path}: unsupported file type {ext or '(none)'!r}; "
                           f"use a .npy or .csv file")
    if not os.path.exists(path):
        raise FmnumpyError(f"{path}: no such file; check the path")
    if not os.path.isfile(path):
        raise FmnumpyError(f"{path}: is not a regular file")
    if os.path.getsize(path) == 0:
        raise FmnumpyError(f"{path}: file is empty; it needs at least 2 samples")
    return _read_npy(path) if ext == ".npy" else _read_csv(path)


# ---- batch drawing for training -----------------------------------------------------

def _resolve(data_or_name):
    """A dataset name, or an (N, D) DTYPE array from an array or a .npy/.csv path."""
    if isinstance(data_or_name, (str, os.PathLike)):
        text = os.fspath(data_or_name)
        if os.path.splitext(text)[1].lower() in (".npy", ".csv"):
            return load_data(text)
        return _check_name(text, " or give a .npy/.csv file")
    return _check_table(np.asarray(data_or_name), "data", lambda r: f"row {r + 1}")


class Data:
    """Training data, loaded and validated once: a dataset name, an (N, D) array or
    a .npy/.csv path.  ``name``: the name or path as given ("array" for an array),
    ``dim``: D, ``draw(n, rng) -> (n, D) DTYPE``: fresh draws from a named
    distribution, or n rows drawn uniformly with replacement from the array."""

    def __init__(self, data_or_name, labels=None):
        src = _resolve(data_or_name)
        self.name = data_or_name if isinstance(data_or_name, str) else "array"
        self.source = src                                   # the name, or the (N, D) array
        self.dim = _DIMS.get(src, 2) if isinstance(src, str) else src.shape[1]
        self.labels, self.n_classes = None, 0               # (N,) int64 for labelled rows
        if labels is None or labels is False:
            return
        if isinstance(src, str):
            if labels is not True:
                raise FmnumpyError(f"labels=True uses the labels of the toy set {src!r}; "
                                   "give an array of labels only with an array of data")
            if src not in CLASSES:
                raise FmnumpyError(f"dataset {src!r} has no labels; the labelled ones are: "
                                   + ", ".join(CLASSES))
            self.n_classes = CLASSES[src]
        else:
            if labels is True:
                raise FmnumpyError("labels=True needs a toy dataset with labels; for your "
                                   "own data give the labels (N,) (or --label-column K)")
            self.labels = check_labels(labels, src.shape[0], self.name)
            self.n_classes = int(self.labels.max()) + 1

    def draw_labeled(self, n, rng):
        """(x (n, D), y (n,) int64): fresh labelled draws, the rows of :meth:`draw`."""
        src = self.source
        if isinstance(src, str):
            return sample(src, n, rng, labels=True)
        i = _as_rng(rng).integers(0, src.shape[0], size=_check_n(n))
        return src[i], self.labels[i]

    @property
    def array(self):
        """The (N, D) rows of user data, or None for a named distribution."""
        return None if isinstance(self.source, str) else self.source

    def draw(self, n, rng):
        src = self.source
        if isinstance(src, str):
            return sample(src, n, rng)
        return src[_as_rng(rng).integers(0, src.shape[0], size=_check_n(n))]


def as_data(data_or_name, labels=None):
    """``data_or_name`` as a :class:`Data` (itself if it is one already)."""
    if isinstance(data_or_name, Data):
        if labels is not None and labels is not False and not data_or_name.n_classes:
            raise FmnumpyError("these data were loaded without labels")
        return data_or_name
    return Data(data_or_name, labels)


def check_labels(labels, n, where="data"):
    """Class labels (n,) as int64 in [0, K): one line naming the first bad one."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise FmnumpyError(f"{where}: labels must have shape ({n},), one per row, got "
                           f"{y.shape}")
    if y.dtype.kind not in "iuf":
        raise FmnumpyError(f"{where}: labels must be integers, got dtype {y.dtype}")
    yf = y.astype(np.float64)
    bad = ~np.isfinite(yf) | (yf != np.round(yf)) | (yf < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise FmnumpyError(f"{where}: label {y[i].item()!r} of row {i + 1} is not a class; "
                           "labels are the integers 0, 1, 2, ...")
    return yf.astype(np.int64)


def split_label_column(x, column, where="data"):
    """(rows without column K, labels from column K) of a loaded (N, D) table."""
    if not (isinstance(column, (int, np.integer)) and -x.shape[1] <= column < x.shape[1]):
        raise FmnumpyError(f"{where}: --label-column {column} is out of range; the file has "
                           f"{x.shape[1]} columns (0..{x.shape[1] - 1})")
    if x.shape[1] < 2:
        raise FmnumpyError(f"{where}: a label column needs at least one data column beside it")
    k = column % x.shape[1]
    y = check_labels(x[:, k], x.shape[0], where)
    return np.ascontiguousarray(np.delete(x, k, axis=1)), y


def split_columns(x, columns, where="data"):
    """(rows without the given columns, those columns (N, K) float64) of a loaded (N, D)
    table: the conditions of ``--condition-columns``."""
    cols = sorted({c % x.shape[1] for c in columns if -x.shape[1] <= c < x.shape[1]})
    if len(cols) != len(set(columns)) or len(cols) != len(columns):
        raise FmnumpyError(f"{where}: --condition-columns {','.join(map(str, columns))} must "
                           f"name distinct columns of the file's {x.shape[1]} "
                           f"(0..{x.shape[1] - 1})")
    if len(cols) >= x.shape[1]:
        raise FmnumpyError(f"{where}: the conditions need at least one data column beside them")
    return (np.ascontiguousarray(np.delete(x, cols, axis=1)),
            np.ascontiguousarray(x[:, cols], dtype=np.float64))


def data_dim(name_or_array):
    """D of a dataset name, an (N, D) array, a .npy/.csv path or a :class:`Data`."""
    return as_data(name_or_array).dim


def make_sampler(data_or_name):
    """``draw(n, rng) -> (n, D) DTYPE`` of :class:`Data` (``data_or_name``)."""
    return as_data(data_or_name).draw
