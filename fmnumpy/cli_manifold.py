"""``fmnumpy train --manifold sphere|torus`` and the manifold checkpoints of ``sample``,
``animate``, ``evaluate`` and ``density`` (the rest of the command line is ``cli.py``)."""
import json
import os
import sys
import time

import numpy as np

from . import manifold_datasets as mdata
from .datasets import load_data
from .errors import FmnumpyError
from .manifold_api import ManifoldFlowMatcher, grid_mass, grid_points, on_manifold
from .manifolds import NAMES

TRAIN_DEFAULTS = {"steps": 10000, "batch_size": 256}   # bench/results/manifolds_configs.md
# options of the Euclidean trainer: name -> the value that means "not given"
EUCLIDEAN_ONLY = {"path": None, "sigma": None, "sb_sigma": None,
                  "sinkhorn_reg": None, "conditional": False, "label_column": None,
                  "label_dropout": None, "source": None, "discrete": False,
                  "vocab_size": None, "sigma_min": 0.0, "weight_decay": 0.0,
                  "metrics_every": 0}


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def wants_manifold(a):
    """True when ``fmnumpy train`` is asked for a manifold: --manifold sphere|torus, or
    a --dataset of ``manifold_datasets``."""
    if getattr(a, "manifold", None) in ("sphere", "torus"):
        return True
    if getattr(a, "manifold", None) is not None:
        return False
    ckpt = os.path.join(a.out, "checkpoint.npz")
    if a.resume and os.path.isfile(ckpt):
        from .loop import checkpoint_model
        return checkpoint_model(ckpt) == "manifold"
    return getattr(a, "dataset", None) in mdata.DATASETS


def _manifold(a):
    named = a.dataset is not None and a.dataset in mdata.DATASETS
    if a.manifold is None:
        return NAMES[mdata.manifold_of(a.dataset)] if named else None   # None: resumed
    if a.dataset is not None:
        mdata.check_name(a.dataset)
        if NAMES[mdata.manifold_of(a.dataset)] != a.manifold:
            raise FmnumpyError(f"dataset {a.dataset!r} lives on the "
                               f"{NAMES[mdata.manifold_of(a.dataset)]}; drop "
                               f"--manifold {a.manifold} or pick a {a.manifold} dataset "
                               f"({', '.join(mdata.names_on(a.manifold))})")
    return a.manifold


def _check_options(a):
    for name, unset in EUCLIDEAN_ONLY.items():
        if getattr(a, name, unset) != unset:
            flag = "--" + name.replace("_", "-")
            raise FmnumpyError(f"{flag} is not an option of flow matching on a manifold; "
                               "drop it")
    if getattr(a, "device", "cpu") == "cuda":
        raise FmnumpyError("flow matching on a manifold runs on the CPU only for now; "
                           "use --device cpu")


def train(a):
    """The manifold training run: checkpoint.npz, samples.npy, samples.png, flow.gif,
    density.png, loss.png and metrics.json in --out."""
    _check_options(a)
    manifold = _manifold(a)
    os.makedirs(a.out, exist_ok=True)
    ckpt = os.path.join(a.out, "checkpoint.npz")
    if a.resume:
        fm = ManifoldFlowMatcher.load(ckpt)
        if manifold is not None and fm.manifold != manifold:
            raise FmnumpyError(f"{ckpt} was trained on the {fm.manifold}; --resume "
                               f"continues it, so drop --manifold {a.manifold}")
        _say(f"resuming from {ckpt} at step {fm.state_.step}")
    else:
        opt = {k: getattr(a, k) for k in ("x_freqs", "time_power")
               if getattr(a, k) is not None}
        fm = ManifoldFlowMatcher(manifold, hidden=a.hidden, activation=a.activation,
                                 time_freqs=a.time_freqs, lr=a.lr, clip=a.clip,
                                 ema_decay=a.ema_decay, warmup=a.warmup,
                                 schedule=a.schedule, coupling=a.coupling, seed=a.seed,
                                 **opt)
    if a.data is not None:
        data = fm._data(load_data(a.data), fm.dim_ if a.resume else None)[2]   # checked once
        name = os.path.basename(a.data)
    else:
        if a.resume and a.dataset is None and fm.data_name_ not in mdata.DATASETS:
            raise FmnumpyError(f"{ckpt} was trained on your own points; pass them again "
                               "with --data FILE to resume")
        data = a.dataset or (fm.data_name_ if a.resume else mdata.DEFAULT_DATASET[fm.code])
        name = data
    total = a.steps or (fm.total_steps_ if a.resume and fm.total_steps_ else
                        TRAIN_DEFAULTS["steps"])
    done = fm.state_.step if a.resume else 0
    if total <= done:
        raise FmnumpyError(f"{ckpt} has taken {done} steps already; --resume continues up "
                           f"to --steps, so pass --steps above {done}")
    batch = a.batch_size or (fm.batch_size_ if a.resume and fm.batch_size_ else
                             TRAIN_DEFAULTS["batch_size"])
    _say(f"training flow matching on the {fm.manifold} on {name} up to step {total}")
    t0 = time.perf_counter()
    fm.fit(data, steps=total - done, batch_size=batch, warm_start=a.resume,
           total_steps=total, progress=not a.no_progress, checkpoint=ckpt,
           checkpoint_every=a.checkpoint_every, log=_say)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = {"manifold": fm.manifold, "steps": fm.state_.step,
               "train_seconds": round(train_s, 2),
               "final_loss": float(np.mean(fm.state_.losses[-200:]))}
    named = isinstance(data, str)
    x, traj = fm.sample(2000, seed=a.seed + 1, record=50)
    np.save(os.path.join(a.out, "samples.npy"), x)
    metrics.update(on_manifold(fm.code, x))
    if named:
        metrics.update(fm.evaluate(data, seed=a.seed, logp_n=0))
    if not a.no_plots:
        metrics.update(pictures(fm, data, x, traj, a.out, a.seed))
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    line = f"trained {fm.state_.step} steps in {train_s:.1f} s"
    if named:
        line += (f"; geodesic W2 to fresh data {metrics['w2']:.4f} "
                 f"({metrics['w2_ratio']:.2f}x the data floor)")
    if "density_mass" in metrics:
        line += f"; the density integrates to {metrics['density_mass']:.4f}"
    _say(line + f"; outputs in {a.out}/")
    return 0


def pictures(fm, data, x, traj, out, seed, n_grid=48):
    """samples.png, flow.gif, loss.png and (on S^2 and T^2) density.png; returns the
    density's total mass on the grid."""
    from . import manifold_plots as mplots
    from .plots import loss_curve
    ref = (mdata.sample(data, x.shape[0], np.random.default_rng([seed, 7]))
           if isinstance(data, str) else data[:x.shape[0]])
    mplots.samples(os.path.join(out, "samples.png"), fm.manifold, x, ref,
                   title=f"samples after {fm.state_.step} steps")
    mplots.flow_gif(os.path.join(out, "flow.gif"), fm.manifold, traj[:, :1500])
    loss_curve(os.path.join(out, "loss.png"), fm.state_.losses)
    if fm.dim_ != (3 if fm.manifold == "sphere" else 2):
        return {}
    grid = fm.density_grid(n_grid=n_grid, steps=40, dtype="float32")
    exact = None
    if isinstance(data, str):
        a, b, pts, _ = grid_points(fm.code, n_grid)
        exact = mdata.log_density(data, pts).reshape(len(b), len(a))
    mplots.density_map(os.path.join(out, "density.png"), fm.manifold, grid, exact)
    return {"density_mass": grid_mass(grid),
            "density_grid": f"{len(grid[1])} x {len(grid[0])} equal-area cells, RK4 40 steps, "
                            "float32"}


def sample(a):
    """``fmnumpy sample --checkpoint sphere.npz --out x.npy``: (n, D) points."""
    if not a.out.endswith(".npy"):
        raise FmnumpyError(f"--out must name a .npy file, got {a.out!r}")
    if a.method == "dopri5":
        raise FmnumpyError("dopri5 is not available on a manifold; use euler, midpoint, "
                           "heun or rk4")
    fm = ManifoldFlowMatcher.load(a.checkpoint)
    x = fm.sample(a.n, seed=a.seed, method=a.method, steps=a.steps)
    np.save(a.out, x)
    if a.log_prob:
        logp = fm.log_prob(x)
        np.save(a.log_prob, logp)
        _say(f"mean log p of the samples {logp.mean():.4f}; written to {a.log_prob}")
    if a.plot:
        from . import manifold_plots as mplots
        mplots.samples(a.plot, fm.manifold, x, title=f"{a.n} samples")
    _say(f"wrote {a.n} points of the {fm.manifold} (D = {fm.dim_}) to {a.out}")
    return 0


def animate(a):
    from . import manifold_plots as mplots
    if not a.out.endswith(".gif"):
        raise FmnumpyError(f"--out must name a .gif file, got {a.out!r}")
    fm = ManifoldFlowMatcher.load(a.checkpoint)
    _, traj = fm.sample(a.n, seed=a.seed, method=a.method, steps=a.steps, record=a.frames)
    mplots.flow_gif(a.out, fm.manifold, traj, fps=a.fps)
    _say(f"wrote {traj.shape[0]} frames to {a.out}")
    return 0


def evaluate(a):
    """Geodesic W2 against fresh data and its floor, the samples' distance from the
    manifold, and the mean log-likelihood against the exact one."""
    fm = ManifoldFlowMatcher.load(a.checkpoint)
    data = a.dataset or fm.data_name_
    if data not in mdata.DATASETS:
        raise FmnumpyError("evaluate compares with fresh draws of a named dataset; pass "
                           "--dataset NAME (" + ", ".join(mdata.names_on(fm.manifold)) + ")")
    m = fm.evaluate(data, n=a.n, seed=a.seed, steps=a.steps)
    for k, v in m.items():
        print(f"{k:>13}: {v:.6g}" if isinstance(v, float) else f"{k:>13}: {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(m, f, indent=1)
    return 0


def density(a):
    from . import manifold_plots as mplots
    fm = ManifoldFlowMatcher.load(a.checkpoint)
    if a.grid < 2:
        raise FmnumpyError(f"--grid must be at least 2, got {a.grid}")
    grid = fm.density_grid(n_grid=a.grid, steps=a.steps, dtype="float32")
    mplots.density_map(a.out, fm.manifold, grid)
    _say(f"wrote {a.out}; the density integrates to {grid_mass(grid):.4f} over the "
         f"{fm.manifold}")
    return 0


COMMANDS = {"sample": sample, "animate": animate, "evaluate": evaluate, "density": density}
