"""The batches of flow matching on R^D: fresh (x0, x1, t) every step from the source,
the data and the coupling, labels with their dropout, and the noise of the noisy paths,
for the steppers (``euclidean.step.CpuStepper``, ``euclidean.cuda.stepper``) that the
one loop (``train.loop.run``) drives.

Random draws are counter-based: the batches of steps [k C, (k+1) C) (C =
``config.DATA_CHUNK_STEPS``, read where it is used, so the GPU trainer and the
host streams always agree) are drawn from ``default_rng([seed, 1, k])``, so the
data of any step is a function of (seed, step) alone.  That is what makes
``--resume`` continue bit for bit: nothing about the RNG has to be carried
except the step counter.  The noise eps of the Schrodinger-bridge path has its
own purpose tag, ``default_rng([seed, 2, k])`` (``PathNoise``), so it follows
the same rule and leaves the (x0, x1, t) of a run unchanged.
"""
import numpy as np

from fmnumpy import config
from fmnumpy.train.times import time_from_uniform

TRAIN_STREAM = 1      # purpose tag of the training-data generator
NO_LABELS = np.zeros(0, dtype=np.int64)       # the labels of an unconditional batch
PATH_NOISE_STREAM = 2     # purpose tag of the noise eps of the sb and sigma paths


class BatchStream:
    """(x0, x1, t) for step k: x0 (B, D) ~ the source (N(0, I), or ``source(n, rng)``
    of another distribution), x1 (B, D) ~ data, t (B,) =
    paths.time_from_uniform(u, time_power) of u ~ U(0, 1) (time_power 1: t = u)."""

    def __init__(self, draw, dim, batch, seed, dtype, coupling=None, time_power=1.0,
                 source=None, labeled=None, label_dropout=0.0, null_class=0):
        self.draw, self.dim, self.batch, self.seed = draw, dim, batch, seed
        self.dtype, self.coupling, self.source = dtype, coupling, source
        # a conditional model: labeled(n, rng) -> (x, y) replaces draw, y labels (n,) or
        # the blocks (n, K + 1) of continuous conditions (conditions.py); a label (a block)
        # is replaced by null_class (zeros) with probability label_dropout (classifier-free
        # guidance).  With blocks, coupling is conditions.conditional_ot's couple(x0, x1,
        # y, rng)
        self.labeled, self.label_dropout = labeled, float(label_dropout)
        self.null_class = int(null_class)
        self.y = None
        self.time_power = float(time_power)
        self.chunk = -1

    def _x1(self, rng):
        """x1 (C, B, D) (and, labelled, their classes y (C, B)): the first draw of a
        chunk's generator."""
        C, B, D = config.DATA_CHUNK_STEPS, self.batch, self.dim
        if self.labeled is None:
            x = self.draw(C * B, rng)
        else:
            x, y = self.labeled(C * B, rng)
            y = np.asarray(y)
            self.y = (y.astype(np.int64).reshape(C, B) if y.ndim == 1
                      else np.ascontiguousarray(y, dtype=self.dtype).reshape(C, B, -1))
        return np.ascontiguousarray(x, dtype=self.dtype).reshape(C, B, D)

    def _times(self, rng):
        """t (C, B) = paths.time_from_uniform(u, time_power) of uniform u (t = u at power 1)."""
        u = rng.random((config.DATA_CHUNK_STEPS, self.batch))
        t = u if self.time_power == 1.0 else time_from_uniform(u, self.time_power)
        return t.astype(self.dtype)

    def x1_chunk(self, k):
        """The x1 (C, B, D) of chunk k alone (the GPU draws x0 and t itself)."""
        return self._x1(np.random.default_rng([self.seed, TRAIN_STREAM, k]))

    def _fill(self, k):
        C, B, D = config.DATA_CHUNK_STEPS, self.batch, self.dim
        rng = np.random.default_rng([self.seed, TRAIN_STREAM, k])
        self.x1 = self._x1(rng)
        if self.source is None:
            self.x0 = rng.standard_normal((C, B, D)).astype(self.dtype)
        else:
            self.x0 = np.ascontiguousarray(self.source(C * B, rng),
                                           dtype=self.dtype).reshape(C, B, D)
        self.t = self._times(rng)
        if self.coupling is not None and self.y is not None and self.y.ndim == 3:
            for c in range(C):                        # conditional OT, batch by batch
                self.x0[c] = self.coupling(self.x0[c], self.x1[c], self.y[c], rng)
        elif self.coupling is not None and self.labeled is not None:
            self._couple_within_classes(rng)
        elif self.coupling is not None:
            whole = getattr(self.coupling, "chunk", None)     # all C batches in one call
            if whole is not None:
                self.x0, self.x1 = whole(self.x0, self.x1, rng)
            else:
                for c in range(C):
                    self.x0[c], self.x1[c] = self.coupling(self.x0[c], self.x1[c], rng)
        if self.labeled is not None and self.label_dropout > 0.0:
            self.y[rng.random((C, B)) < self.label_dropout] = self.null_class
        self.chunk = k

    def _couple_within_classes(self, rng):
        """The coupling applied to the rows of each class of each batch on their own:
        an x0 is paired only with data of one class (a class of one row keeps its x0)."""
        for c in range(self.y.shape[0]):
            for cls in np.unique(self.y[c]):
                rows = np.flatnonzero(self.y[c] == cls)
                if rows.shape[0] > 1:
                    self.x0[c, rows], self.x1[c, rows] = self.coupling(
                        self.x0[c, rows], self.x1[c, rows], rng)

    def batch_at(self, step):
        """The batch of 0-based step ``step``."""
        k, r = divmod(step, config.DATA_CHUNK_STEPS)
        if k != self.chunk:
            self._fill(k)
        return self.x0[r], self.x1[r], self.t[r]

    def batches(self, step, n):
        """The batches of steps [step, step + n) as views (n, B, D), (n, B, D), (n, B)
        and labels (n, B) int64 or condition blocks (n, B, K + 1) (or (n, 0)
        unconditional); the steps must lie in one
        chunk of ``config.DATA_CHUNK_STEPS`` (:func:`chunk_steps`)."""
        k, r = divmod(step, config.DATA_CHUNK_STEPS)
        if k != self.chunk:
            self._fill(k)
        y = self.y[r:r + n] if self.y is not None else np.zeros((n, 0), dtype=np.int64)
        return self.x0[r:r + n], self.x1[r:r + n], self.t[r:r + n], y

    def labels_at(self, step):
        """The labels (B,) int64 of step ``step`` (after :meth:`batch_at`), the null
        class where dropped; an empty (0,) array for an unconditional model."""
        if self.y is None:
            return NO_LABELS
        return self.y[step % config.DATA_CHUNK_STEPS]


class PathNoise:
    """eps (B, D) ~ N(0, I) of step k for the Schrodinger-bridge path, drawn
    like ``BatchStream`` in chunks of C steps from ``default_rng([seed, 2,
    k // C])``; for the other paths an empty (0, D) array, and no draws."""

    def __init__(self, active, dim, batch, seed, dtype):
        self.active, self.dim, self.batch, self.seed = active, dim, batch, seed
        self.chunk = -1
        self.eps = np.zeros((config.DATA_CHUNK_STEPS, batch if active else 0, dim), dtype=dtype)

    def noise_at(self, step):
        """The noise of 0-based step ``step``: (B, D), or (0, D) when inactive."""
        k, r = divmod(step, config.DATA_CHUNK_STEPS)
        if self.active and k != self.chunk:
            rng = np.random.default_rng([self.seed, PATH_NOISE_STREAM, k])
            self.eps[...] = rng.standard_normal(self.eps.shape)
            self.chunk = k
        return self.eps[r]

    def noises(self, step, n):
        """The noise of steps [step, step + n) in one chunk: (n, B, D), or (n, 0, D)."""
        self.noise_at(step)
        r = step % config.DATA_CHUNK_STEPS
        return self.eps[r:r + n]


def chunk_steps(step, n):
    """How many of the next n steps from 0-based ``step`` lie in its data chunk."""
    return min(n, config.DATA_CHUNK_STEPS - step % config.DATA_CHUNK_STEPS)


