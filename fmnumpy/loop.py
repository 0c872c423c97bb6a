"""The host loop of the estimators that step on the host one batch at a time
(``DiscreteFlowMatcher``, ``ManifoldFlowMatcher``): steps, the progress bar,
periodic checkpoints, and nothing lost on Ctrl-C."""
import time

import numpy as np

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
