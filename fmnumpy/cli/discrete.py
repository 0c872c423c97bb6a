"""``fmnumpy`` for discrete flow matching: ``train --discrete`` and the discrete
checkpoints of ``sample`` and ``evaluate``.  Its options and defaults are
DiscreteFlowMatcher's (``cli/common.py`` refuses the other families' options before
these run)."""
import os
import time

import numpy as np

from fmnumpy.cli import common
from fmnumpy.cli.common import say
from fmnumpy.discrete.estimator import DiscreteFlowMatcher
from fmnumpy.errors import FmnumpyError

RENAME = {"power": "kappa_power"}          # parameter -> option, where they differ


def model(a):
    """The DiscreteFlowMatcher that ``fmnumpy train --discrete`` trains anew: the options
    given, DiscreteFlowMatcher's defaults for the rest."""
    return DiscreteFlowMatcher(**common.model_options(a, DiscreteFlowMatcher, RENAME))


def train(a):
    """The discrete training run: checkpoint, samples.png, flow.gif, loss.png, elbo.png,
    samples.npy and metrics.json in --out."""
    fm, ckpt = common.open_model(a, DiscreteFlowMatcher, model, rename=RENAME)
    data = a.data or a.dataset or (fm.data_ if a.resume and fm.data_ not in (None, "array")
                                   else common.fit_defaults(DiscreteFlowMatcher)["data"])
    data = fm._data(data)                                # read and checked once
    steps, batch = common.run_length(a, fm)
    common.resume_from(a, fm, ckpt, steps)
    say(f"training discrete flow matching on {data.name} (V = {fm.vocab_size}, source "
        f"{fm.source}) up to step {steps}")
    train_s = common.fit_timed(a, fm, data, steps, batch, ckpt)
    t0 = time.perf_counter()
    metrics = dict(steps=fm.state_.step, train_seconds=round(train_s, 2),
                   final_loss=float(np.mean(fm.state_.losses[-200:])),
                   **fm.evaluate(data, seed=a.seed, elbo_n=2000 if data.pmf is not None else 0))
    x, frames = fm.sample(20000, seed=a.seed + 1, record=np.linspace(0, 1, 41))
    np.save(os.path.join(a.out, "samples.npy"), x)
    if not a.no_plots:
        pictures(fm, data, x, frames, a.out, a.seed)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    common.write_json(os.path.join(a.out, "metrics.json"), metrics)
    line = (f"trained {fm.state_.step} steps in {train_s:.1f} s; TV to fresh data "
            f"{metrics['tv']:.4f} ({metrics['tv_ratio']:.2f}x the data floor)")
    if "elbo" in metrics:
        line += f"; mean ELBO {metrics['elbo']:.3f} nats (true mean log p {metrics['logp']:.3f})"
    say(line + f"; outputs in {a.out}/")
    return 0


def pictures(fm, data, x, frames, out, seed):
    from fmnumpy.plots import discrete as dplots
    from fmnumpy.plots.euclidean import loss_curve
    loss_curve(os.path.join(out, "loss.png"), fm.state_.losses)
    if fm.dim_ != 2:
        return
    ref = data.draw(x.shape[0], np.random.default_rng([seed, 7]))
    dplots.histograms(os.path.join(out, "samples.png"), x, ref, fm.vocab_size,
                      title=f"samples after {fm.state_.step} steps")
    dplots.token_flow_gif(os.path.join(out, "flow.gif"), [(t, xt[:4000]) for t, xt in frames],
                          fm.vocab_size)
    V = fm.vocab_size
    grid = np.stack(np.meshgrid(np.arange(V), np.arange(V), indexing="ij"), -1).reshape(-1, 2)
    elbo = fm.elbo(grid, seed=seed).reshape(V, V)
    logp = data.log_prob(grid).reshape(V, V) if data.pmf is not None else None
    dplots.elbo_map(os.path.join(out, "elbo.png"), elbo, logp)


def _load(a, **defaults):
    """The checkpoint's model with the asked threads; the options not given set to
    ``defaults`` (seed 1, the model's sampler steps)."""
    fm = DiscreteFlowMatcher.load(a.checkpoint).set_params(threads=a.threads)
    common.fill(a, dict(defaults, seed=1, steps=fm.sample_steps))
    return fm


def sample(a):
    """``fmnumpy sample --checkpoint discrete.npz --out x.npy``: (n, D) int64 tokens."""
    if not a.out.endswith(".npy"):
        raise FmnumpyError(f"--out must name a .npy file, got {a.out!r}")
    fm = _load(a, n=2000)
    x = fm.sample(a.n, seed=a.seed, steps=a.steps)
    np.save(a.out, x)
    if a.plot and fm.dim_ == 2:
        from fmnumpy.plots import discrete as dplots
        data = fm._data(fm.data_) if fm.data_ not in (None, "array") else None
        ref = x if data is None else data.draw(a.n, np.random.default_rng([a.seed, 7]))
        dplots.histograms(a.plot, x, ref, fm.vocab_size)
    say(f"wrote {a.n} token samples of D = {fm.dim_} to {a.out}")
    return 0


def evaluate(a):
    """``fmnumpy evaluate --checkpoint discrete.npz``: TV to the data floor and the ELBO."""
    fm = _load(a, n=20000)
    data = a.data or a.dataset or fm.data_
    if data in (None, "array"):
        raise FmnumpyError("this checkpoint was trained on an in-memory array; pass "
                           "--data FILE to compare with")
    common.print_metrics(fm.evaluate(data, n=a.n, seed=a.seed, steps=a.steps), to=a.json)
    return 0


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate}
