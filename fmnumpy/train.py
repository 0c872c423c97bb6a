"""The training loop: fresh (x0, x1, t) every step, one fused compiled step,
progress bar, periodic callbacks and checkpoints, clean stops.

Random draws are counter-based: the batches of steps [k C, (k+1) C) (C =
``config.DATA_CHUNK_STEPS``) are drawn from ``default_rng([seed, 1, k])``, so the
data of any step is a function of (seed, step) alone.  That is what makes
``--resume`` continue bit for bit: nothing about the RNG has to be carried
except the step counter.  The noise eps of the Schrodinger-bridge path has its
own purpose tag, ``default_rng([seed, 2, k])`` (``PathNoise``), so it follows
the same rule and leaves the (x0, x1, t) of a run unchanged.
"""
import time

import numpy as np

from .config import DATA_CHUNK_STEPS
from .errors import FmnumpyError
from .optim import ema_decay_at, learning_rate
from .paths import SB, time_from_uniform
from .step import StepBuffers, train_step

TRAIN_STREAM = 1      # purpose tag of the training-data generator
PATH_NOISE_STREAM = 2     # purpose tag of the sb path's noise eps


class BatchStream:
    """(x0, x1, t) for step k: x0 (B, D) ~ N(0, I), x1 (B, D) ~ data, t (B,) =
    paths.time_from_uniform(u, time_power) of u ~ U(0, 1) (time_power 1: t = u)."""

    def __init__(self, draw, dim, batch, seed, dtype, coupling=None, time_power=1.0):
        self.draw, self.dim, self.batch, self.seed = draw, dim, batch, seed
        self.dtype, self.coupling = dtype, coupling
        self.time_power = float(time_power)
        self.chunk = -1

    def _fill(self, k):
        C, B, D = DATA_CHUNK_STEPS, self.batch, self.dim
        rng = np.random.default_rng([self.seed, TRAIN_STREAM, k])
        self.x1 = np.ascontiguousarray(self.draw(C * B, rng), dtype=self.dtype).reshape(C, B, D)
        self.x0 = rng.standard_normal((C, B, D)).astype(self.dtype)
        u = rng.random((C, B))
        t = u if self.time_power == 1.0 else time_from_uniform(u, self.time_power)
        self.t = t.astype(self.dtype)
        if self.coupling is not None:
            whole = getattr(self.coupling, "chunk", None)     # all C batches in one call
            if whole is not None:
                self.x0, self.x1 = whole(self.x0, self.x1, rng)
            else:
                for c in range(C):
                    self.x0[c], self.x1[c] = self.coupling(self.x0[c], self.x1[c], rng)
        self.chunk = k

    def batch_at(self, step):
        """The batch of 0-based step ``step``."""
        k, r = divmod(step, DATA_CHUNK_STEPS)
        if k != self.chunk:
            self._fill(k)
        return self.x0[r], self.x1[r], self.t[r]


class PathNoise:
    """eps (B, D) ~ N(0, I) of step k for the Schrodinger-bridge path, drawn
    like ``BatchStream`` in chunks of C steps from ``default_rng([seed, 2,
    k // C])``; for the other paths an empty (0, D) array, and no draws."""

    def __init__(self, active, dim, batch, seed, dtype):
        self.active, self.dim, self.batch, self.seed = active, dim, batch, seed
        self.chunk = -1
        self.eps = np.zeros((DATA_CHUNK_STEPS, batch if active else 0, dim), dtype=dtype)

    def noise_at(self, step):
        """The noise of 0-based step ``step``: (B, D), or (0, D) when inactive."""
        k, r = divmod(step, DATA_CHUNK_STEPS)
        if self.active and k != self.chunk:
            rng = np.random.default_rng([self.seed, PATH_NOISE_STREAM, k])
            self.eps[...] = rng.standard_normal(self.eps.shape)
            self.chunk = k
        return self.eps[r]


def run(model, stream, steps, until=None, progress=True, callback=None, callback_every=0,
        checkpoint=None, checkpoint_every=0, log=None):
    """Train ``model`` (a FlowMatcher) from ``model.step_`` up to ``until`` (default
    ``steps``), with the learning-rate schedule spanning ``steps``.

    Writes ``checkpoint`` every ``checkpoint_every`` steps, at the end and on
    Ctrl-C (then re-raises KeyboardInterrupt).  A non-finite loss stops
    training with FmnumpyError; the last checkpoint on disk is left as it was.
    """
    spec, opt = model.spec_, model.opt
    B = stream.batch
    buf = StepBuffers(spec.sizes, B, 1, model.theta_.dtype)
    path, sigma = model.path_args()
    noise = PathNoise(path == SB, stream.dim, B, model.seed, model.theta_.dtype)
    until = steps if until is None else min(int(until), steps)
    b1, b2 = opt.betas
    bar = None
    if progress and until > model.step_:
        from tqdm.auto import tqdm    # edge dependency, only for the bar
        bar = tqdm(total=until, initial=model.step_, unit="step", dynamic_ncols=True,
                   smoothing=0.1, mininterval=0.5)
    t_start, s_start = time.perf_counter(), model.step_
    pending = 0
    try:
        while model.step_ < until:
            k = model.step_ + 1                      # 1-based Adam step
            x0, x1, t = stream.batch_at(model.step_)
            eps = noise.noise_at(model.step_)
            lr = learning_rate(k, opt.lr, steps, opt.warmup, opt.schedule, opt.lr_min)
            loss, gnorm = train_step(
                model.theta_, model.dtheta_, model.m_, model.v_, model.ema_,
                spec.sizes, spec.kind, spec.n_freq, path, sigma, x0, x1, t, eps,
                k, lr, b1, b2, opt.eps, opt.weight_decay, opt.decoupled, opt.clip,
                ema_decay_at(k, opt.ema_decay),
                *buf.args())
            if not np.isfinite(loss):
                where = f"; the last good checkpoint {checkpoint} is kept" if checkpoint else ""
                raise FmnumpyError(f"loss became non-finite at step {k}{where}; lower the "
                                   "learning rate (--lr) or clip gradients (--clip 1.0)")
            model.step_ = k
            model.losses_.append(float(loss))
            pending += 1
            if bar is not None and (pending >= 50 or k == until):
                bar.update(pending)
                pending = 0
                rate = (k - s_start) / max(1e-9, time.perf_counter() - t_start)
                bar.set_postfix_str(f"loss {np.mean(model.losses_[-50:]):.4f}, {rate:,.0f} steps/s",
                                    refresh=False)
            if callback is not None and callback_every and k % callback_every == 0:
                callback(model, k)
            if checkpoint and checkpoint_every and k % checkpoint_every == 0:
                model.save(checkpoint)
    except KeyboardInterrupt:
        if checkpoint:
            model.save(checkpoint)
            msg = (f"interrupted at step {model.step_}; checkpoint written to {checkpoint}, "
                   "continue with --resume")
            if log:
                log(msg)
        raise
    finally:
        if bar is not None:
            bar.close()
    if checkpoint:
        model.save(checkpoint)
    model.train_seconds_ += time.perf_counter() - t_start
    return model
