"""``fmnumpy train --discrete`` and the discrete checkpoints of ``sample`` and
``evaluate`` (the rest of the command line is ``cli.py``)."""
import json
import os
import sys
import time

import numpy as np

from .discrete_api import DiscreteFlowMatcher
from .errors import FmnumpyError

TRAIN_DEFAULTS = {"dataset": "discrete_checkerboard", "steps": 5000, "batch_size": 1024,
                  "vocab_size": 128, "source": "mask"}
# continuous-only options: name -> the value that means "not given"
CONTINUOUS_ONLY = {"path": None, "sigma": None, "sb_sigma": None, "time_power": None,
                   "coupling": "independent", "conditional": False, "label_column": None,
                   "label_dropout": None, "device": "cpu", "x_freqs": None}


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def train(a):
    """The discrete training run: checkpoint, samples.png, flow.gif, loss.png, elbo.png,
    samples.npy and metrics.json in --out."""
    for name, unset in CONTINUOUS_ONLY.items():
        if getattr(a, name, unset) != unset:
            flag = "--" + name.replace("_", "-")
            raise FmnumpyError(f"{flag} is an option of continuous flow matching; drop it "
                               f"with --discrete" + (" (the GPU has no discrete flow matching "
                                                     "yet)" if name == "device" else ""))
    os.makedirs(a.out, exist_ok=True)
    ckpt = os.path.join(a.out, "checkpoint.npz")
    if a.resume:
        fm = DiscreteFlowMatcher.load(ckpt)
        for flag, given, had in (("--vocab-size", a.vocab_size, fm.vocab_size),
                                 ("--source", a.source, fm.source)):
            if given is not None and given != had:
                raise FmnumpyError(f"{ckpt} was trained with {flag} {had}; --resume "
                                   f"continues it, so drop {flag} {given}")
        _say(f"resuming from {ckpt} at step {fm.state_.step}")
    else:
        fm = DiscreteFlowMatcher(
            vocab_size=a.vocab_size or TRAIN_DEFAULTS["vocab_size"],
            source=a.source or TRAIN_DEFAULTS["source"], hidden=a.hidden,
            power=a.kappa_power, time_freqs=a.time_freqs, lr=a.lr, ema_decay=a.ema_decay,
            seed=a.seed)
    data = a.data or a.dataset or (fm.data_name_ if a.resume and fm.data_name_ not in
                                   (None, "array") else TRAIN_DEFAULTS["dataset"])
    data = fm._data(data)                                # read and checked once
    steps = a.steps or TRAIN_DEFAULTS["steps"]
    batch = a.batch_size or (fm.batch_size_ if a.resume and fm.batch_size_ else
                             TRAIN_DEFAULTS["batch_size"])
    _threads(a.threads)
    _say(f"training discrete flow matching on "
         f"{data.name} (V = {fm.vocab_size}, source {fm.source}) for {steps} steps")
    t0 = time.perf_counter()
    fm.fit(data, steps=steps, batch_size=batch, warm_start=a.resume,
           progress=not a.no_progress, checkpoint=ckpt, checkpoint_every=a.checkpoint_every,
           log=_say)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = dict(steps=fm.state_.step, train_seconds=round(train_s, 2),
                   final_loss=float(np.mean(fm.state_.losses[-200:])),
                   **fm.evaluate(data, seed=a.seed, elbo_n=2000 if data.pmf is not None else 0))
    x, frames = fm.sample(20000, seed=a.seed + 1, record=np.linspace(0, 1, 41))
    np.save(os.path.join(a.out, "samples.npy"), x)
    if not a.no_plots:
        pictures(fm, data, x, frames, a.out, a.seed)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    line = (f"trained {fm.state_.step} steps in {train_s:.1f} s; TV to fresh data "
            f"{metrics['tv']:.4f} ({metrics['tv_ratio']:.2f}x the data floor)")
    if "elbo" in metrics:
        line += f"; mean ELBO {metrics['elbo']:.3f} nats (true mean log p {metrics['logp']:.3f})"
    _say(line + f"; outputs in {a.out}/")
    return 0


def pictures(fm, data, x, frames, out, seed):
    from . import discrete_plots as dplots
    from .plots import loss_curve
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


def _threads(threads):
    if threads is not None:
        from .solvers import limit_blas
        limit_blas(threads)


def sample(a):
    """``fmnumpy sample --checkpoint discrete.npz --out x.npy``: (n, D) int64 tokens."""
    if not a.out.endswith(".npy"):
        raise FmnumpyError(f"--out must name a .npy file, got {a.out!r}")
    fm = DiscreteFlowMatcher.load(a.checkpoint)
    _threads(a.threads)
    x = fm.sample(a.n, seed=a.seed, steps=a.steps)
    np.save(a.out, x)
    if getattr(a, "plot", None) and fm.dim_ == 2:
        from . import discrete_plots as dplots
        data = fm._data(fm.data_name_) if fm.data_name_ not in (None, "array") else None
        ref = x if data is None else data.draw(a.n, np.random.default_rng([a.seed, 7]))
        dplots.histograms(a.plot, x, ref, fm.vocab_size)
    _say(f"wrote {a.n} token samples of D = {fm.dim_} to {a.out}")
    return 0


def evaluate(a):
    """``fmnumpy evaluate --checkpoint discrete.npz``: TV to the data floor and the ELBO."""
    fm = DiscreteFlowMatcher.load(a.checkpoint)
    data = a.data or a.dataset or fm.data_name_
    if data in (None, "array"):
        raise FmnumpyError("this checkpoint was trained on an in-memory array; pass "
                           "--data FILE to compare with")
    _threads(a.threads)
    m = fm.evaluate(data, n=a.n if a.n else 20000, seed=a.seed)
    for k, v in m.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(m, f, indent=1)
    return 0


COMMANDS = {"sample": sample, "evaluate": evaluate}
