"""The one training loop of every family: steps until a stop, the progress bar,
periodic callbacks and checkpoints, a clean stop on Ctrl-C and on a non-finite loss.

:func:`run` moves a ``state.TrainState`` forward with a *stepper* it is given
(``euclidean.step.CpuStepper``, ``euclidean.cuda.stepper.CudaStepper``, or
:class:`HostStepper` around a family's step function), which takes the steps and
keeps the state; the loop decides where to stop (callbacks, checkpoints, the bar)
and what to do on Ctrl-C and on a non-finite loss: stop, leave the last good
checkpoint on disk as it was, and name the step.
"""
import time

import numpy as np

from fmnumpy.errors import FmnumpyError


BAR_EVERY = 50        # steps between progress-bar updates


def next_stop(step, until, *everies):
    """The first step after ``step`` that is a multiple of one of ``everies`` (0: none),
    or ``until``."""
    stop = until
    for e in everies:
        if e:
            stop = min(stop, (step // e + 1) * e)
    return stop


def run(state, stream, stepper, steps, until=None, progress=None, callback=None,
        callback_every=0, checkpoint=None, checkpoint_every=0, save=None, log=None):
    """Train ``state`` from ``state.step`` up to ``until`` (default ``steps``) with
    ``stepper`` on ``stream``'s batches, the learning-rate schedule spanning ``steps``.

    progress: None, or ``progress(total, initial)`` -> a bar with ``update(n, loss,
    rate)`` and ``close()``.  callback(k) runs every ``callback_every`` steps; one that
    returns True ends the run there (early stopping).
    ``save(checkpoint)`` writes the checkpoint every ``checkpoint_every`` steps, at
    the end and on Ctrl-C (then KeyboardInterrupt is re-raised).  A non-finite loss
    stops training with FmnumpyError; the last checkpoint on disk is left as it was.
    """
    until = steps if until is None else min(int(until), steps)
    if not checkpoint:
        save = None
    bar = progress(until, state.step) if progress is not None and until > state.step else None
    t_start, s_start = time.perf_counter(), state.step
    try:
        while state.step < until:
            stop = next_stop(state.step, until, callback_every if callback else 0,
                             checkpoint_every if save else 0, BAR_EVERY if bar else 0)
            bad = stepper.run(state, stream, stop - state.step, steps)
            if bad:
                stepper.pull(state)
                where = f"; the last good checkpoint {checkpoint} is kept" if checkpoint else ""
                raise FmnumpyError(f"loss became non-finite at step {bad}{where}; lower the "
                                   "learning rate (--lr) or clip gradients (--clip 1.0)")
            k = state.step
            if bar is not None and (k % BAR_EVERY == 0 or k == until):
                rate = (k - s_start) / max(1e-9, time.perf_counter() - t_start)
                bar.update(k, float(np.mean(state.losses[-BAR_EVERY:])), rate)
            want_cb = callback is not None and callback_every and k % callback_every == 0
            want_ck = save is not None and checkpoint_every and k % checkpoint_every == 0
            if want_cb or want_ck:
                stepper.pull(state)
            done = bool(callback(k)) if want_cb else False
            if want_ck:
                save(checkpoint)
            if done:                        # the callback ended the run (early stopping)
                break
    except KeyboardInterrupt:
        stepper.interrupted(state)
        if save is not None:
            save(checkpoint)
            if log:
                log(f"interrupted at step {state.step}; checkpoint written to {checkpoint}, "
                    "continue with --resume")
        raise
    finally:
        if bar is not None:
            bar.close()
    stepper.pull(state)
    if save is not None:
        save(checkpoint)
    state.seconds += time.perf_counter() - t_start
    return state


class HostStepper:
    """The stepper of a family whose batches are drawn and stepped on the host one step
    at a time: ``step(k, total)`` takes 0-based step k of a run of ``total`` steps on
    the state (gradient, then ``train.update.apply_update``, which leaves the state
    untouched on a non-finite loss or gradient) and returns its loss."""

    def __init__(self, step):
        self.step = step

    def run(self, state, stream, n, total):
        """Take up to n steps; returns the 1-based step whose loss was not finite (the
        state left before it), else 0."""
        for _ in range(n):
            k = state.step
            loss = self.step(k, total)
            if not np.isfinite(loss):
                return k + 1
            state.step = k + 1
            state.losses.append(float(loss))
        return 0

    def pull(self, state):
        """The state already lives on the host."""

    interrupted = pull
