"""What the estimators that step on the host one batch at a time share
(``DiscreteFlowMatcher``, ``ManifoldFlowMatcher``): the training loop (steps, the
progress bar, periodic checkpoints, nothing lost on Ctrl-C) and their checkpoints."""
import time

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import FmnumpyError
from .progress import bar_factory


def train_loop(state, step, steps, progress=False, checkpoint=None, checkpoint_every=0,
               save=None, log=None):
    """Take ``steps`` more steps on ``state`` (a ``state.TrainState``).

    step(k) takes 0-based step k and returns its loss; a non-finite loss stops
    the run with an FmnumpyError (the state holds the last good weights, which
    are saved first).  ``save(path)`` writes a checkpoint to ``checkpoint`` every
    ``checkpoint_every`` steps, at the end, and on Ctrl-C before it propagates.
    ``progress``: as ``progress.bar_factory``.
    """
    first, last = state.step, state.step + steps
    bar = bar_factory(progress)
    bar = bar(last, first) if bar else None
    losses, t_start, t_report = [], time.perf_counter(), time.perf_counter()

    def flush():
        nonlocal losses, t_start
        if losses:
            state.record(losses)
            state.seconds += time.perf_counter() - t_start
        losses, t_start = [], time.perf_counter()

    try:
        for k in range(first, last):
            loss = step(k)
            if not np.isfinite(loss):
                flush()
                if checkpoint:
                    save(checkpoint)
                raise FmnumpyError(f"the loss was not finite at step {k + 1}; the model "
                                   f"keeps the weights of step {k}; lower the learning rate")
            losses.append(float(loss))
            done = k + 1
            if checkpoint and checkpoint_every and done % checkpoint_every == 0:
                flush()
                save(checkpoint)
            if bar and (time.perf_counter() - t_report > 0.5 or done == last):
                t_report = time.perf_counter()
                recent = (state.losses + losses)[-100:]
                bar.update(done, float(np.mean(recent)),
                           (done - first) / max(state.seconds + t_report - t_start, 1e-9))
    except KeyboardInterrupt:
        flush()
        if checkpoint:
            save(checkpoint)
            if log:
                log(f"interrupted at step {state.step}; saved {checkpoint}")
        raise
    finally:
        if bar:
            bar.close()
    flush()
    if checkpoint:
        save(checkpoint)


class HostModel:
    """save/load of a host-stepped estimator: its ``get_params``, D, the training
    state and a few fitted attributes.  Subclasses set MODEL (the checkpoint's
    ``model`` field) and WRONG_MODEL (the message for another kind of checkpoint)
    and provide ``_init_state(dim)``, ``_check_fitted``, ``dim_`` and ``state_``."""

    MODEL = None
    WRONG_MODEL = "{path} holds another kind of model"
    FITTED = (("data_name_", "data"), ("batch_size_", "batch_size"),   # (attribute, its
              ("total_steps_", "total_steps"))                         # metadata key)

    def save(self, path):
        self._check_fitted()
        st = self.state_
        meta = {"model": self.MODEL, "params": self.get_params(), "dim": self.dim_,
                "step": st.step, "seconds": st.seconds,
                **{key: getattr(self, k, None) for k, key in self.FITTED}}
        return save_checkpoint(path, meta, st.arrays())

    @classmethod
    def load(cls, path):
        meta, arrays = load_checkpoint(path)
        if meta.get("model") != cls.MODEL:
            raise FmnumpyError(cls.WRONG_MODEL.format(path=path))
        p = dict(meta["params"])
        p["hidden"] = tuple(p["hidden"])
        fm = cls(**p)
        fm._init_state(meta["dim"])
        fm.state_.restore(arrays, meta["step"], meta["seconds"], path)
        for k, key in cls.FITTED:
            setattr(fm, k, meta.get(key))
        return fm


def checkpoint_model(path):
    """The ``model`` field of a checkpoint: "manifold", "discrete" or None (Euclidean)."""
    meta, _ = load_checkpoint(path)
    return meta.get("model")
