"""``fmnumpy`` for flow matching on the sphere and the torus: ``train --manifold``
and the manifold checkpoints of ``sample``, ``animate``, ``evaluate`` and ``density``.
Its options and defaults are ManifoldFlowMatcher's (``cli/common.py`` refuses the
other families' options before these run)."""
import os
import time

import numpy as np

from fmnumpy.cli import common
from fmnumpy.cli.common import say
from fmnumpy.errors import FmnumpyError
from fmnumpy.euclidean.datasets import load_data
from fmnumpy.manifold import datasets as mdata
from fmnumpy.manifold.estimator import ManifoldFlowMatcher, grid_mass, grid_points, on_manifold
from fmnumpy.manifold.presets import preset
from fmnumpy.manifold.manifolds import NAMES


def _manifold(a):
    if a.latlon:
        if a.manifold not in (None, "sphere"):
            raise FmnumpyError(f"--latlon reads points of the sphere; drop --manifold "
                               f"{a.manifold} or --latlon")
        if a.data is None:
            raise FmnumpyError("--latlon reads latitude,longitude from your file; add "
                               "--data FILE")
        return "sphere"
    named = a.dataset is not None and a.dataset in mdata.DATASETS
    if a.manifold in (None, "euclidean"):
        return NAMES[mdata.manifold_of(a.dataset)] if named else None   # None: resumed
    if a.dataset is not None:
        mdata.check_name(a.dataset)
        if NAMES[mdata.manifold_of(a.dataset)] != a.manifold:
            raise FmnumpyError(f"dataset {a.dataset!r} lives on the "
                               f"{NAMES[mdata.manifold_of(a.dataset)]}; drop "
                               f"--manifold {a.manifold} or pick a {a.manifold} dataset "
                               f"({', '.join(mdata.names_on(a.manifold))})")
    return a.manifold


def model(a, manifold=None):
    """The ManifoldFlowMatcher that ``fmnumpy train --manifold`` trains anew: the options
    given, ManifoldFlowMatcher's defaults for the rest."""
    return ManifoldFlowMatcher(**dict(common.model_options(a, ManifoldFlowMatcher),
                                      manifold=manifold or _manifold(a) or "sphere"))


def train(a):
    """The manifold training run: checkpoint.npz, samples.npy, samples.png, flow.gif,
    density.png, loss.png and metrics.json in --out."""
    manifold = _manifold(a)
    if a.preset is not None:
        if a.resume:
            raise FmnumpyError("--resume continues the checkpoint with its own settings; "
                               "drop --preset")
        model_args, run = preset(a.preset)
        common.fill(a, {**model_args, **run})
    fm, ckpt = common.open_model(a, ManifoldFlowMatcher, lambda a: model(a, manifold),
                                 keep=("manifold",))
    if a.resume and manifold is not None and fm.manifold != manifold:
        raise FmnumpyError(f"{ckpt} was trained on the {fm.manifold}; --resume "
                           f"continues it, so drop --manifold {a.manifold}")
    if a.data is not None:
        points = (mdata.latlon_to_sphere(*mdata.read_latlon(a.data)) if a.latlon
                  else load_data(a.data))
        data = fm._data(points, fm.dim_ if a.resume else None)[2]              # checked once
        name = os.path.basename(a.data)
    else:
        if a.resume and a.dataset is None and fm.data_ not in mdata.DATASETS:
            raise FmnumpyError(f"{ckpt} was trained on your own points; pass them again "
                               "with --data FILE to resume")
        data = a.dataset or (fm.data_ if a.resume else mdata.DEFAULT_DATASET[fm.code])
        name = data
    total, batch = common.run_length(a, fm)
    common.resume_from(a, fm, ckpt, total)
    say(f"training flow matching on the {fm.manifold} on {name} up to step {total}")
    train_s = common.fit_timed(a, fm, data, total, batch, ckpt)
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
    common.write_json(os.path.join(a.out, "metrics.json"), metrics)
    line = f"trained {fm.state_.step} steps in {train_s:.1f} s"
    if named:
        line += (f"; geodesic W2 to fresh data {metrics['w2']:.4f} "
                 f"({metrics['w2_ratio']:.2f}x the data floor)")
    if "density_mass" in metrics:
        line += f"; the density integrates to {metrics['density_mass']:.4f}"
    say(line + f"; outputs in {a.out}/")
    return 0


def pictures(fm, data, x, traj, out, seed, n_grid=48):
    """samples.png, flow.gif, loss.png and (on S^2 and T^2) density.png; returns the
    density's total mass on the grid."""
    from fmnumpy.plots import manifold as mplots
    from fmnumpy.plots.euclidean import loss_curve
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


SAMPLING = dict(n=2000, seed=1, frames=50, fps=20)


def _load(a, **defaults):
    """The checkpoint's model with the asked threads; the options not given set to
    ``defaults``, then to the sampling defaults (the model's method and steps)."""
    fm = ManifoldFlowMatcher.load(a.checkpoint).set_params(threads=a.threads)
    common.fill(a, defaults)
    common.fill(a, dict(SAMPLING, method=fm.method, steps=fm.sample_steps))
    return fm


def sample(a):
    """``fmnumpy sample --checkpoint sphere.npz --out x.npy``: (n, D) points."""
    if not a.out.endswith(".npy"):
        raise FmnumpyError(f"--out must name a .npy file, got {a.out!r}")
    if a.method == "dopri5":
        raise FmnumpyError("dopri5 is not available on a manifold; use euler, midpoint, "
                           "heun or rk4")
    fm = _load(a)
    x = fm.sample(a.n, seed=a.seed, method=a.method, steps=a.steps)
    np.save(a.out, x)
    if a.log_prob:
        logp = fm.log_prob(x, method=a.method, steps=a.steps)
        np.save(a.log_prob, logp)
        say(f"mean log p of the samples {logp.mean():.4f}; written to {a.log_prob}")
    if a.plot:
        from fmnumpy.plots import manifold as mplots
        mplots.samples(a.plot, fm.manifold, x, title=f"{a.n} samples")
    say(f"wrote {a.n} points of the {fm.manifold} (D = {fm.dim_}) to {a.out}")
    return 0


def animate(a):
    from fmnumpy.plots import manifold as mplots
    if not a.out.endswith(".gif"):
        raise FmnumpyError(f"--out must name a .gif file, got {a.out!r}")
    fm = _load(a)
    _, traj = fm.sample(a.n, seed=a.seed, method=a.method, steps=a.steps, record=a.frames)
    mplots.flow_gif(a.out, fm.manifold, traj, fps=a.fps)
    say(f"wrote {traj.shape[0]} frames to {a.out}")
    return 0


def evaluate(a):
    """Geodesic W2 against fresh data and its floor, the samples' distance from the
    manifold, and the mean log-likelihood against the exact one."""
    fm = _load(a)
    data = a.dataset or fm.data_
    if data not in mdata.DATASETS:
        raise FmnumpyError("evaluate compares with fresh draws of a named dataset; pass "
                           "--dataset NAME (" + ", ".join(mdata.names_on(fm.manifold)) + ")")
    common.print_metrics(fm.evaluate(data, n=a.n, seed=a.seed, steps=a.steps), to=a.json)
    return 0


def density(a):
    from fmnumpy.plots import manifold as mplots
    fm = _load(a, steps=20, grid=80)
    if a.grid < 2:
        raise FmnumpyError(f"--grid must be at least 2, got {a.grid}")
    grid = fm.density_grid(n_grid=a.grid, steps=a.steps, dtype="float32")
    mplots.density_map(a.out, fm.manifold, grid)
    say(f"wrote {a.out}; the density integrates to {grid_mass(grid):.4f} over the "
        f"{fm.manifold}")
    return 0


COMMANDS = {"train": train, "sample": sample, "animate": animate, "evaluate": evaluate,
            "density": density}
