"""``run_cuda``: the twin of ``train.run`` for ``device="cuda"``.

The state lives on the GPU while training; the host sees it (``model.theta_``
and friends) at the end, before each callback and checkpoint, and on Ctrl-C or
a non-finite loss.  Losses are read back once per chunk of steps.
"""
import time

import numpy as np

from ..errors import FmnumpyError
from . import require_gpu


def _next_stop(step, until, *everies):
    """The first step after ``step`` that is a multiple of one of ``everies`` (or until)."""
    stop = until
    for e in everies:
        if e:
            stop = min(stop, (step // e + 1) * e)
    return stop


def run_cuda(model, data, batch_size, steps, until=None, progress=True, callback=None,
             callback_every=0, checkpoint=None, checkpoint_every=0, log=None):
    """Train ``model`` (a FlowMatcher whose state is initialised) on ``data`` from
    ``model.step_`` up to ``until`` (default ``steps``); same contract as
    ``train.run``: checkpoints, callbacks, Ctrl-C and non-finite losses."""
    require_gpu()
    from .trainer import CudaTrainer
    if model._coupling() is not None:
        raise FmnumpyError("couplings are not supported on the GPU yet; use --device cpu")
    until = steps if until is None else min(int(until), steps)
    tr = CudaTrainer(model.spec_, model.opt, batch_size, model.sigma_min, data, model.seed,
                     start_step=model.step_, time_power=model.time_power)
    tr.set_state(model.theta_, model.m_, model.v_, model.ema_)

    def pull():
        s = tr.get_state()
        model.theta_[:], model.m_[:], model.v_[:], model.ema_[:] = \
            s["theta"], s["m"], s["v"], s["ema"]
        model.dtheta_[:] = s["dtheta"]

    bar = None
    if progress and until > model.step_:
        from tqdm.auto import tqdm    # edge dependency, only for the bar
        bar = tqdm(total=until, initial=model.step_, unit="step", dynamic_ncols=True,
                   smoothing=0.1, mininterval=0.5)
    t_start, s_start = time.perf_counter(), model.step_
    try:
        while model.step_ < until:
            stop = _next_stop(model.step_, until, callback_every if callback else 0,
                              checkpoint_every if checkpoint else 0)
            n = tr.span(model.step_, stop - model.step_)
            losses, bad = tr.run(model.step_, n, steps)
            if bad:
                good = bad - 1 - model.step_
                model.losses_.extend(float(x) for x in losses[:good])
                model.step_ = bad - 1
                pull()
                where = f"; the last good checkpoint {checkpoint} is kept" if checkpoint else ""
                raise FmnumpyError(f"loss became non-finite at step {bad}{where}; lower the "
                                   "learning rate (--lr) or clip gradients (--clip 1.0)")
            model.losses_.extend(float(x) for x in losses)
            model.step_ += n
            k = model.step_
            if bar is not None:
                bar.update(n)
                rate = (k - s_start) / max(1e-9, time.perf_counter() - t_start)
                bar.set_postfix_str(f"loss {np.mean(model.losses_[-50:]):.4f}, "
                                    f"{rate:,.0f} steps/s", refresh=False)
            want_cb = callback is not None and callback_every and k % callback_every == 0
            want_ck = checkpoint and checkpoint_every and k % checkpoint_every == 0
            if want_cb or want_ck:
                pull()
            if want_cb:
                callback(model, k)
            if want_ck:
                model.save(checkpoint)
    except KeyboardInterrupt:
        losses, bad = tr.finish_interrupted()
        if not bad:
            model.losses_.extend(float(x) for x in losses)
            model.step_ += len(losses)
        pull()
        if checkpoint:
            model.save(checkpoint)
            if log:
                log(f"interrupted at step {model.step_}; checkpoint written to {checkpoint}, "
                    "continue with --resume")
        raise
    finally:
        if bar is not None:
            bar.close()
    pull()
    if checkpoint:
        model.save(checkpoint)
    model.train_seconds_ += time.perf_counter() - t_start
    return model
