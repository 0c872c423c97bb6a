"""Continuous conditions: a model of p(x | c) for c a vector of K real numbers
(docs/conditions.md).

The condition enters the network as K standardized numbers and a presence flag after
the time features (``mlp.condition_features``): the block [(c - mean) / std, 1].  An
all-zero block is the null condition: training drops a row's condition to it with
probability ``label_dropout``, so the same network also learns p(x) and sampling can
guide, v = v(x, t, null) + w (v(x, t, c) - v(x, t, null)) (docs/guidance.md).

    check_conditions(C, n)       (n, K) finite float64, or one line
    Standardizer                 mean and std of the training conditions; block(c)
    ConditionedData              rows x_i with their blocks, drawn together
    conditional_ot               conditional minibatch OT: ||x0 - x1||^2 + beta ||c0 - c1||^2
"""
import numpy as np

from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError


def check_conditions(C, n, where="conditions", width=None):
    """Conditions (n, K) as float64: one line for the wrong shape, a width other than
    ``width`` (a model's K), or a value that is not a finite number."""
    c = np.asarray(C)
    if c.ndim == 1 and width is not None and c.shape[0] == width * n and n == 1:
        c = c.reshape(1, width)
    if c.ndim != 2 or c.shape[0] != n:
        raise FmnumpyError(f"{where} must have shape ({n}, K), one row per point, got "
                           f"{c.shape}")
    if width is not None and c.shape[1] != width:
        raise FmnumpyError(f"{where} have {c.shape[1]} numbers per row; the model was trained "
                           f"on conditions of {width}")
    if c.shape[1] < 1:
        raise FmnumpyError(f"{where} need at least one column")
    if c.dtype.kind not in "iufb":
        raise FmnumpyError(f"{where} must be numbers, got dtype {c.dtype}")
    c = c.astype(np.float64)
    bad = ~np.isfinite(c)
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise FmnumpyError(f"{where}: row {i + 1}, column {k + 1} is {c[i, k]}, not a finite "
                           "number")
    return c


class Standardizer:
    """The training conditions' mean and standard deviation per column (a constant
    column keeps std 1), and the network's block of a condition."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @classmethod
    def fit(cls, C):
        std = C.std(axis=0)
        return cls(C.mean(axis=0), np.where(std > 0.0, std, 1.0))

    @property
    def width(self):
        return self.mean.shape[0]

    def block(self, C, dtype=DTYPE):
        """[(c - mean) / std, 1] (n, K + 1) of conditions (n, K)."""
        out = np.ones((C.shape[0], self.width + 1), dtype=dtype)
        out[:, :-1] = (C - self.mean) / self.std
        return out

    def condition_block(self, condition, n, dtype=DTYPE):
        """The block (n, K + 1) of ``condition``: K numbers for every point, or (n, K)."""
        c = np.asarray(condition)
        if c.ndim == 1 and c.shape[0] != self.width:
            raise FmnumpyError(f"the condition has {c.shape[0]} numbers; the model was trained "
                               f"on conditions of {self.width}")
        if c.ndim == 1:
            c = np.broadcast_to(c, (n, self.width))
        return self.block(check_conditions(c, n, "condition", self.width), dtype)

    def to_dict(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d):
        return cls(d["mean"], d["std"])


class ConditionedData:
    """Training rows x (N, D) with their conditions' blocks (N, K + 1): ``draw(n, rng)``
    draws rows uniformly with replacement and returns (x, block), as
    ``datasets.Data.draw_labeled`` returns (x, labels)."""

    def __init__(self, data, blocks):
        self.data, self.blocks = data, blocks

    def draw(self, n, rng):
        i = rng.integers(0, self.blocks.shape[0], size=int(n))
        return self.data.array[i], self.blocks[i]


def conditional_ot(beta):
    """Conditional minibatch OT: the x1 of a batch carry their conditions' blocks y; every
    x0 gets a condition c0 drawn from the batch's own (a permutation of its rows), and x0
    is permuted by the exact assignment minimising sum ||x0 - x1||^2 + beta ||c0 - c1||^2
    (standardized c; ``couplings.exact_ot`` on the joined vectors [x, sqrt(beta) c]).
    Each x1 keeps its condition (carried along), so a large beta pairs x0 only with data
    of nearby conditions.  Returns couple(x0, x1, y, rng) -> x0 reordered."""
    from fmnumpy.couplings.ot import exact_ot
    root = float(np.sqrt(beta))

    def couple(x0, x1, y, rng):
        B, D = x1.shape
        c1 = np.asarray(y[:, :-1], dtype=np.float64)
        c0 = c1[rng.permutation(B)]
        a = np.concatenate([x0, root * c0], axis=1)
        b = np.concatenate([x1, root * c1], axis=1)
        pa, _ = exact_ot(a, b, rng)                   # x0 permuted, x1 as it was
        return np.ascontiguousarray(pa[:, :D], dtype=x0.dtype)
    return couple
