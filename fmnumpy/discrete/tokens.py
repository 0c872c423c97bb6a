"""Token data for discrete flow matching: 2D pmfs on a V x V grid of tokens with
exact probabilities, user token files, their checks, and the histogram metric.

A 2D token x = (i, j), 0 <= i, j < V, is the cell in column i and row j of a V x V
grid over the square [-L, L]^2 (cell centre c = L (2 (i + 1/2) / V - 1), likewise
for j).  Each named pmf is known exactly, so the true log p(x) of every sample is
available to check the ELBO against.
"""
import math
import os

import numpy as np

from fmnumpy.errors import FmnumpyError

GRID_HALF_WIDTH = 4.0           # L: the grid spans [-L, L]^2, FFJORD's toy square


def checkerboard_pmf(vocab):
    """The checkerboard on V x V tokens: the grid cut in 4 x 4 squares, the 8 squares
    with (row square + column square) even filled, uniform over their cells.
    -> (V, V) pmf indexed [i, j]."""
    sq = (4 * np.arange(vocab)) // vocab                       # square of each index
    on = ((sq[:, None] + sq[None, :]) % 2 == 0).astype(np.float64)
    return on / on.sum()


def gaussians_pmf(vocab):
    """FFJORD's 8gaussians (centres 4 (cos, sin)(pi k / 4) / sqrt 2, sd 0.5 / sqrt 2)
    restricted to the cell centres of the V x V grid and normalised there."""
    c = GRID_HALF_WIDTH * (2.0 * (np.arange(vocab) + 0.5) / vocab - 1.0)
    ang = np.pi * np.arange(8) / 4.0
    mu = 4.0 * np.stack([np.cos(ang), np.sin(ang)], axis=1) / math.sqrt(2.0)
    sd = 0.5 / math.sqrt(2.0)
    gx = np.exp(-(c[None, :] - mu[:, :1]) ** 2 / (2 * sd ** 2))      # (8, V)
    gy = np.exp(-(c[None, :] - mu[:, 1:]) ** 2 / (2 * sd ** 2))
    p = np.einsum("ki,kj->ij", gx, gy)
    return p / p.sum()


PMFS = {"discrete_checkerboard": checkerboard_pmf, "discrete_8gaussians": gaussians_pmf}


class TokenData:
    """Training tokens: a named 2D pmf on a V x V grid (fresh exact draws, and
    ``log_prob``) or an (N, D) int array (rows drawn with replacement).
    ``name``, ``dim`` D, ``vocab`` V, ``draw(n, rng) -> (n, D) int64``."""

    def __init__(self, data, vocab):
        self.vocab = vocab_size(vocab)
        if isinstance(data, (str, os.PathLike)) and os.fspath(data) in PMFS:
            self.name = os.fspath(data)
            self.pmf = PMFS[self.name](self.vocab)               # (V, V)
            self.cdf = np.cumsum(self.pmf.ravel())
            self.tokens = None
            self.dim = 2
            return
        if isinstance(data, (str, os.PathLike)):
            text = os.fspath(data)
            if os.path.splitext(text)[1].lower() not in (".npy", ".csv"):
                raise FmnumpyError(f"unknown token dataset {text!r}; use one of "
                                   f"{', '.join(PMFS)} or a .npy/.csv file of integers")
            self.name = text
            self.tokens = load_tokens(text, self.vocab)
        else:
            self.name = "array"
            self.tokens = check_tokens(data, self.vocab)
        self.pmf = None
        self.dim = self.tokens.shape[1]

    def draw(self, n, rng):
        if self.tokens is not None:
            return self.tokens[rng.integers(0, self.tokens.shape[0], size=n)]
        cell = np.searchsorted(self.cdf, rng.random(n) * self.cdf[-1], side="right")
        cell = np.minimum(cell, self.cdf.shape[0] - 1)
        return np.stack(np.divmod(cell, self.vocab), axis=1).astype(np.int64)

    def log_prob(self, x):
        """The exact log p(x) (N,) of tokens under a named pmf (nats)."""
        if self.pmf is None:
            raise FmnumpyError("the exact log-probability is known only for the named "
                               f"pmfs ({', '.join(PMFS)}), not for {self.name}")
        x = check_tokens(x, self.vocab)
        with np.errstate(divide="ignore"):
            return np.log(self.pmf[x[:, 0], x[:, 1]])

    def entropy(self):
        """H = -sum p log p (nats), so E log p(x) = -H."""
        p = self.pmf[self.pmf > 0]
        return float(-(p * np.log(p)).sum())


def vocab_size(vocab):
    try:
        ok = int(vocab) == vocab and int(vocab) >= 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FmnumpyError(f"vocab_size must be an integer >= 2, got {vocab!r}")
    return int(vocab)


def check_tokens(x, vocab, where="tokens", row_name=None):
    """(N, D) int64 from ``x``, or FmnumpyError naming the first bad row: values that
    are NaN, non-integer, negative or >= V, a shape that is not (N, D)."""
    row_name = row_name or (lambda r: f"row {r + 1}")
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise FmnumpyError(f"{where} must be an (N, D) array of integers, got shape {x.shape}")
    if x.dtype.kind not in "iuf" and x.dtype != bool:
        raise FmnumpyError(f"{where} must hold integers, got dtype {x.dtype}")
    xf = x.astype(np.float64)
    bad = ~np.isfinite(xf) | (xf != np.round(xf)) | (xf < 0) | (xf >= vocab)
    if bad.any():
        r, d = np.argwhere(bad)[0]
        v = x[r, d]
        why = ("not finite" if not np.isfinite(xf[r, d]) else
               "not an integer" if xf[r, d] != round(xf[r, d]) else
               f"outside [0, {vocab})")
        raise FmnumpyError(f"{where}: {row_name(r)} column {d + 1} holds {v!r}, {why}; "
                           f"tokens are integers 0 .. {vocab - 1} (vocab_size {vocab})")
    return xf.astype(np.int64)


def load_tokens(path, vocab):
    """(N, D) int64 tokens from a .npy file or a .csv (one sample per line, commas,
    an optional header line with no number), checked by :func:`check_tokens`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FmnumpyError(f"{path}: no such file; check the path")
    if path.lower().endswith(".npy"):
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise FmnumpyError(f"{path}: cannot be read as a .npy array ({e})") from None
        return check_tokens(x, vocab, where=path)
    rows, lines = [], []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            fields = [s.strip() for s in line.strip().split(",")]
            if fields == [""]:
                continue
            try:
                rows.append([float(s) for s in fields])
            except ValueError:
                if not rows and not lines:
                    lines.append(0)                              # a header: skip it
                    continue
                raise FmnumpyError(f"{path}: line {i} has a non-numeric entry; tokens are "
                                   "integers") from None
            lines.append(i)
            if len(rows[-1]) != len(rows[0]):
                raise FmnumpyError(f"{path}: line {i} has {len(rows[-1])} values, the first "
                                   f"row {len(rows[0])}")
    lines = [n for n in lines if n]
    if not rows:
        raise FmnumpyError(f"{path}: holds no tokens")
    return check_tokens(np.array(rows), vocab, where=path,
                        row_name=lambda r: f"line {lines[r]}")


# ----------------------------------------------------------------------------
# the metric: total variation between coarse histograms
# ----------------------------------------------------------------------------

def coarse_histogram(x, vocab, bins):
    """The normalised histogram of tokens x (N, D) over bins^D cells, each token
    value v in bin floor(v bins / V)."""
    b = (np.asarray(x, dtype=np.int64) * bins) // vocab                 # (N, D)
    cell = np.ravel_multi_index(tuple(b.T), (bins,) * b.shape[1])
    return np.bincount(cell, minlength=bins ** b.shape[1]) / b.shape[0]


def total_variation(x, y, vocab, bins):
    """TV = (1/2) sum |h_x - h_y| between the coarse histograms of two token sets."""
    return 0.5 * float(np.abs(coarse_histogram(x, vocab, bins) -
                              coarse_histogram(y, vocab, bins)).sum())


def tv_floor(data, n, pairs, bins, seed=0):
    """Mean and sd of the TV between two independent n-draws of the data, over
    ``pairs`` pairs: what a perfect model would score."""
    tv = [total_variation(data.draw(n, np.random.default_rng([seed, 7, p, 0])),
                          data.draw(n, np.random.default_rng([seed, 7, p, 1])),
                          data.vocab, bins) for p in range(pairs)]
    return float(np.mean(tv)), float(np.std(tv))
