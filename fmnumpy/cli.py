"""The ``fmnumpy`` command: train, sample, animate, evaluate, density, reflow.

Every user mistake ends in one line on stderr saying what is wrong and what to
do, and a non-zero exit code (2 for bad input, 130 for Ctrl-C); no traceback.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from . import datasets, reflow
from .api import DEFAULTS, FlowMatcher
from .errors import FmnumpyError, positive_int
from .solvers import METHODS

PROG = "fmnumpy"


def _hidden(text):
    try:
        widths = tuple(int(h) for h in str(text).split(",") if h.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 256,256,256, "
                                         f"got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def _add_sampling_args(p, n_default, adaptive=False):
    p.add_argument("--checkpoint", required=True, help="checkpoint .npz written by train")
    p.add_argument("-n", "--n", type=int, default=n_default, help="number of particles "
                   "(default %(default)s)")
    p.add_argument("--method", default=DEFAULTS["method"],
                   choices=METHODS + (("dopri5",) if adaptive else ()),
                   help="ODE solver (default %(default)s)")
    if adaptive:
        p.add_argument("--rtol", type=float, default=1e-5, help="dopri5 relative tolerance")
        p.add_argument("--atol", type=float, default=1e-5, help="dopri5 absolute tolerance")
    p.add_argument("--steps", type=int, default=DEFAULTS["sample_steps"],
                   help="solver steps from t=0 to t=1 (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the prior draw "
                   "(default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))


def _load_for_sampling(a):
    fm = FlowMatcher.load(a.checkpoint)
    if a.device == "cuda":
        from .cuda import require_gpu
        require_gpu()
    return fm.set_params(threads=a.threads, device=a.device)


def build_parser():
    ap = argparse.ArgumentParser(
        prog=PROG, description="Flow matching from scratch: train a velocity field v(x, t) "
        "on a path from noise x0 ~ N(0, I) to data x1 (by default the straight path "
        "xt = (1-t) x0 + t x1), then sample by integrating dx/dt = v(x, t) from t=0 to t=1.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model and write checkpoint and pictures",
                       description="Train on a toy dataset or your own (N, D) data; writes "
                       "checkpoint.npz, scatter snapshots, samples.png, flow.gif, loss.png, "
                       "vector_field.png, trajectories.png and metrics.json to --out.")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--dataset", default=None, help="toy dataset name (default "
                     f"{DEFAULTS['dataset']}); one of: " + ", ".join(_datasets()))
    src.add_argument("--data", default=None, help="your data: a .npy or .csv file of "
                     "shape (N, D)")
    t.add_argument("--source", default=None, help="where x0 comes from: a toy dataset name "
                   "or a .npy/.csv file (default N(0, I)); samples then start from it; with "
                   "--discrete: mask (default) or uniform")
    t.add_argument("--manifold", default=None, choices=("euclidean", "sphere", "torus"),
                   help="flow matching on the sphere (points are unit vectors; default "
                   "dataset vmf) or the flat torus (points are angles; default "
                   "wrapped_gmm) (docs/manifolds.md); default euclidean, or the manifold "
                   "of a --dataset of " + ", ".join(_manifold_datasets()))
    t.add_argument("--x-freqs", type=int, default=None, help="Fourier features of the "
                   "point: K frequencies pi 2^k of plane waves along the axes and "
                   "diagonals (R^D, the sphere), the torus harmonics 1..K+1 (default 3 "
                   "on the CPU, 0 on the GPU; 2 with --manifold)")
    t.add_argument("--discrete", action="store_true", help="discrete flow matching on "
                   "integer tokens (default dataset discrete_checkerboard; "
                   "docs/discrete.md)")
    t.add_argument("--vocab-size", type=int, default=None, help="--discrete: tokens are "
                   "0 .. V-1 (default 128)")
    t.add_argument("--kappa-power", type=float, default=1.0, help="--discrete: the "
                   "scheduler kappa_t = t^n (default %(default)s)")
    t.add_argument("--sigma", type=float, default=None,
                   help="constant width of the straight path, xt = (1-t) x0 + t x1 + sigma "
                   "eps (TorchCFM's I-CFM / OT-CFM sigma; default 0)")
    lab = t.add_mutually_exclusive_group()
    lab.add_argument("--conditional", action="store_true",
                     help="train on the toy set's labels (mode, arm, moon, ring, circle) for "
                     "classifier-free guidance")
    lab.add_argument("--label-column", type=int, default=None,
                     help="with --data FILE: column K holds integer class labels")
    t.add_argument("--label-dropout", type=float, default=None,
                   help=f"fraction of labels replaced by the null class (default "
                   f"{DEFAULTS['label_dropout']})")
    t.add_argument("--steps", type=int, default=None,
                   help=f"training steps in total (default {DEFAULTS['steps']}, or the "
                   "checkpoint's total with --resume)")
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"batch size (default {DEFAULTS['batch_size']}, or the checkpoint's "
                   "with --resume)")
    t.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                   help="peak learning rate (default %(default)s)")
    t.add_argument("--hidden", type=_hidden, default=DEFAULTS["hidden"],
                   help="hidden widths, comma-separated (default "
                   + ",".join(map(str, DEFAULTS["hidden"])) + ")")
    t.add_argument("--activation", default=DEFAULTS["activation"],
                   help="silu, relu, selu or tanh (default %(default)s)")
    t.add_argument("--time-freqs", type=int, default=DEFAULTS["time_freqs"],
                   help="sinusoidal time-embedding frequencies, 0 = raw t "
                   "(default %(default)s)")
    t.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=("adam", "adamw"))
    t.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    t.add_argument("--clip", type=float, default=DEFAULTS["clip"],
                   help="clip the gradient norm at this value, 0 = off (default %(default)s)")
    t.add_argument("--ema-decay", type=float, default=DEFAULTS["ema_decay"],
                   help="EMA of the weights used for sampling (default %(default)s)")
    t.add_argument("--warmup", type=int, default=DEFAULTS["warmup"],
                   help="linear learning-rate warm-up steps (default %(default)s)")
    t.add_argument("--schedule", default=DEFAULTS["schedule"], choices=("constant", "cosine"))
    t.add_argument("--sigma-min", type=float, default=DEFAULTS["sigma_min"],
                   help="Lipman's sigma_min of the straight path (default %(default)s)")
    t.add_argument("--path", default=None,
                   help="probability path: straight, cosine (variance preserving) or sb "
                   f"(Schrodinger bridge) (default {DEFAULTS['path']})")
    t.add_argument("--sb-sigma", type=float, default=None,
                   help=f"noise of --path sb (default {DEFAULTS['sb_sigma']})")
    t.add_argument("--time-power", type=float, default=None,
                   help="draw training times t = 1 - (1 - u)^K, u uniform: 1 is uniform, "
                   "K > 1 trains more near the data (default 2 on the straight path, "
                   "1 on the others)")
    t.add_argument("--coupling", default=DEFAULTS["coupling"],
                   help="pairing of noise and data in a batch: independent, ot (exact "
                   "minibatch optimal transport) or sinkhorn (default %(default)s)")
    t.add_argument("--sinkhorn-reg", type=float, default=None,
                   help="entropic regularisation of --coupling sinkhorn (default 0.05)")
    t.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed "
                   "(default %(default)s)")
    t.add_argument("--out", default="results", help="output folder (default %(default)s)")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz up to --steps")
    t.add_argument("--snapshot-every", type=int, default=None,
                   help="steps between scatter snapshots (default steps/10, 0 = none)")
    t.add_argument("--metrics-every", type=int, default=0,
                   help="every N steps, sample 1000 points (RK4, 20 steps) and log W2, MMD "
                   "and energy distance to fresh data, also to OUT/metrics_log.jsonl "
                   "(default 0 = off)")
    t.add_argument("--checkpoint-every", type=int, default=1000,
                   help="steps between checkpoints (default %(default)s)")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    t.add_argument("--threads", type=int, default=None, help="CPU threads")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-plots", action="store_true", help="skip the pictures")

    s = sub.add_parser("sample", help="draw samples from a checkpoint into a .npy file")
    _add_sampling_args(s, DEFAULTS["n_samples"], adaptive=True)
    s.add_argument("--log-prob", default=None, help="also write log p of each sample "
                   "(same solve, exact divergence) to this .npy file")
    s.add_argument("--out", required=True, help="output .npy file")
    s.add_argument("--plot", default=None, help="also write a scatter PNG here")
    s.add_argument("--label", type=int, default=None,
                   help="conditional model: sample this class (default: the whole "
                   "distribution)")
    s.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance weight w (default %(default)s)")
    s.add_argument("--qmc", action="store_true", help="quasi-random (scrambled Sobol) "
                   "source points: a more even sample set, not independent draws")

    a = sub.add_parser("animate", help="write a GIF of particles flowing from noise to data")
    _add_sampling_args(a, 2000)
    a.add_argument("--out", required=True, help="output .gif file")
    a.add_argument("--frames", type=int, default=50, help="frames (default %(default)s)")
    a.add_argument("--fps", type=int, default=20)
    e = sub.add_parser("evaluate", help="print sample-quality metrics of a checkpoint",
                       description="Draw samples from a checkpoint and compare them with "
                       "fresh data: exact W2, MMD (RBF), energy distance, the number of "
                       "function evaluations, and the straightness of the flow.")
    _add_sampling_args(e, 2000)
    esrc = e.add_mutually_exclusive_group()
    esrc.add_argument("--dataset", default=None, help="compare with this toy dataset "
                      "(default: the one the checkpoint was trained on)")
    esrc.add_argument("--data", default=None, help="compare with rows of this .npy/.csv file")
    e.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    e.add_argument("--qmc", action="store_true", help="quasi-random source points for the "
                   "samples (as sample --qmc)")
    d = sub.add_parser("density", help="heatmap of the model's exact density p(x) (D = 2)",
                       description="Score a grid of points by the exact log-likelihood "
                       "(reverse solve with the forward-mode divergence) and draw p(x).")
    d.add_argument("--checkpoint", required=True, help="checkpoint .npz written by train")
    d.add_argument("--out", required=True, help="output .png file")
    d.add_argument("--grid", type=int, default=80, help="grid points per axis "
                   "(default %(default)s)")
    d.add_argument("--lim", type=float, default=4.0, help="half-width of the square "
                   "(default %(default)s)")
    d.add_argument("--steps", type=int, default=20, help="RK4 steps of the reverse solve "
                   "(default %(default)s)")
    d.add_argument("--threads", type=int, default=None, help="CPU threads")
    add_reflow_parser(sub)
    return ap


def add_reflow_parser(subparsers):
    """Add ``reflow`` to the ``fmnumpy`` sub-commands; returns its parser."""
    p = subparsers.add_parser(
        "reflow", help="straighten a trained flow by reflow (fewer sampling steps)",
        description="Reflow (Liu et al. 2023): draw pairs (x0, x1) by integrating the "
        "checkpoint's flow from noise, train a new flow on the straight paths between "
        "these pairs, and compare the two: straightness and W2 at 1, 2 and 4 Euler "
        "steps.  Writes OUT/checkpoint.npz and OUT/reflow.json.")
    p.add_argument("--checkpoint", required=True, help="checkpoint .npz to straighten")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pairs", type=int, default=reflow.PAIRS,
                   help="number of (x0, x1) pairs (default %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the checkpoint's total steps)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size (default: the checkpoint's)")
    p.add_argument("--init", default="model", choices=reflow.INITS,
                   help="start from the checkpoint's weights or from scratch "
                   "(default %(default)s)")
    p.add_argument("--eval-n", type=int, default=2000,
                   help="points for the before/after comparison (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs, the "
                   "initialisation and the batches (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _version():
    from . import __version__
    return __version__


def _datasets():
    from .datasets import DATASETS
    return DATASETS


def _manifold_datasets():
    from .manifold_datasets import DATASETS
    return DATASETS


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
def _train_params(a):
    """FlowMatcher's constructor arguments from ``fmnumpy train``'s options (the
    ones the command has; the rest keep the defaults of ``FlowMatcher.get_params``)."""
    params = {k: getattr(a, k) for k in FlowMatcher.PARAMS if getattr(a, k, None) is not None}
    params["path"] = a.path if a.path is not None else DEFAULTS["path"]
    if a.sinkhorn_reg is not None:
        params["coupling_options"] = {"reg": a.sinkhorn_reg}
    return params


def _train_data(a, name, resumed=None):
    """The training data of ``fmnumpy train``, read once: a toy set or file, with the
    toy set's labels (--conditional) or a file's label column (--label-column K)."""
    labels = True if a.conditional else None
    if resumed is not None and resumed.spec_.n_classes and labels is None \
            and a.label_column is None:
        if a.data is not None or name not in datasets.CLASSES:
            raise FmnumpyError(f"this checkpoint was trained with labels; pass "
                               f"--label-column K with --data {a.data or name}")
        labels = True
    if a.label_column is None:
        return datasets.as_data(name, labels)
    if a.data is None:
        raise FmnumpyError("--label-column takes its labels from your file; add --data FILE "
                           "(for a toy set use --conditional)")
    rows, y = datasets.split_label_column(datasets.load_data(a.data), a.label_column, a.data)
    return datasets.Data(rows, labels=y)


def _class_pictures(fm, data, out, seed, n=400, weights=(0.0, 1.0, 2.0, 4.0)):
    """classes.png: the samples of each class beside its data; guidance.png: samples
    of every class at the guidance weights w = 0, 1, 2, 4."""
    from . import plots
    K = fm.spec_.n_classes
    x, y = data.draw_labeled(n * K, np.random.default_rng([seed, 7]))
    plots.classes(os.path.join(out, "classes.png"),
                  [fm.sample(n, labels=k, seed=seed + 10 + k) for k in range(K)],
                  data=[x[y == k] for k in range(K)], title="samples of each class (w = 1)")
    want = np.arange(n * 2) % K
    plots.guidance_sweep(os.path.join(out, "guidance.png"),
                         {w: (fm.sample(want.shape[0], labels=want, guidance=w, seed=seed + 3),
                              want) for w in weights})


def cmd_train(a):
    from . import cli_manifold
    if cli_manifold.wants_manifold(a):
        if a.discrete:
            raise FmnumpyError("--discrete and --manifold are two kinds of flow matching; "
                               "pick one")
        return cli_manifold.train(a)
    if a.discrete:
        from . import cli_discrete
        return cli_discrete.train(a)
    if a.vocab_size is not None:
        raise FmnumpyError("--vocab-size is an option of discrete flow matching; add "
                           "--discrete")
    from . import plots
    data = a.data if a.data is not None else (a.dataset or DEFAULTS["dataset"])
    os.makedirs(a.out, exist_ok=True)
    ckpt = os.path.join(a.out, "checkpoint.npz")
    if a.resume:
        fm = FlowMatcher.load(ckpt)
        if fm.data_ not in (None, "array") and a.data is None and a.dataset is None:
            data = fm.data_
        if a.path is not None and a.path.lower() != fm.path:
            raise FmnumpyError(f"{ckpt} was trained on the {fm.path} path; --resume continues "
                               f"it, so drop --path {a.path} (or train anew in another --out)")
        if a.sb_sigma is not None and a.sb_sigma != fm.sb_sigma:
            raise FmnumpyError(f"{ckpt} was trained with sb_sigma {fm.sb_sigma}; --resume "
                               f"continues it, so drop --sb-sigma {a.sb_sigma}")
        if a.time_power is not None and a.time_power != fm.time_power:
            raise FmnumpyError(f"{ckpt} was trained with time_power {fm.time_power}; "
                               f"--resume continues it, so drop --time-power {a.time_power}")
        if a.sigma is not None and a.sigma != fm.sigma:
            raise FmnumpyError(f"{ckpt} was trained with sigma {fm.sigma}; --resume "
                               f"continues it, so drop --sigma {a.sigma}")
        had = None if fm.source_ is None else fm.source_.name
        if a.source is not None and a.source != had:
            raise FmnumpyError(f"{ckpt} was trained from the source {had or 'N(0, I)'}; "
                               f"--resume continues it, so drop --source {a.source}")
        _say(f"resuming from {ckpt} at step {fm.step_}")
        fm.set_params(device=a.device, threads=a.threads)
    else:
        if a.sb_sigma is not None and (a.path or DEFAULTS["path"]) != "sb":
            raise FmnumpyError(f"--sb-sigma is the noise of --path sb; drop it or add "
                               f"--path sb (got --path {a.path or DEFAULTS['path']})")
        fm = FlowMatcher(**_train_params(a))
    if a.device == "cuda":
        from .cuda import require_gpu
        require_gpu()
    if a.steps is None:
        a.steps = (fm.total_steps_ if a.resume and fm.total_steps_ else DEFAULTS["steps"])
    if a.batch_size is None:
        a.batch_size = (fm.batch_size_ if a.resume and fm.batch_size_ else
                        DEFAULTS["batch_size"])
    data = _train_data(a, data, fm if a.resume else None)           # read and checked once
    draw = data.draw
    ref = draw(2000, np.random.default_rng([a.seed, 7]))           # (2000, D) for pictures
    every = a.snapshot_every if a.snapshot_every is not None else max(1, a.steps // 10)
    if a.no_plots:
        every = 0
    if a.metrics_every < 0:
        raise FmnumpyError(f"--metrics-every must be 0 (off) or a positive number of steps, "
                           f"got {a.metrics_every}")
    held_out = (draw(1000, np.random.default_rng([a.seed, 9]))     # for --metrics-every
                if a.metrics_every else None)
    metrics_log = os.path.join(a.out, "metrics_log.jsonl")

    def snapshot(model, k):
        if every and k % every == 0:
            x = model.sample(1000, method="euler", steps=50, seed=k)
            plots.scatter(os.path.join(a.out, plots.scatter_epoch_name(k // every)), x,
                          data=ref, title=f"step {k}")
        if a.metrics_every and k % a.metrics_every == 0:
            from .metrics import evaluate
            x = model.sample(held_out.shape[0], method="rk4", steps=20, seed=k)
            m = dict(step=k, loss=float(np.mean(model.losses_[-100:])),
                     **evaluate(x, held_out))
            with open(metrics_log, "a") as f:
                f.write(json.dumps(m) + "\n")
            _say(f"step {k}: loss {m['loss']:.4f}, W2 {m['w2']:.4f}, MMD {m['mmd']:.2e}, "
                 f"energy {m['energy']:.2e}")

    t0 = time.perf_counter()
    source = None if a.source is None else datasets.as_data(a.source)   # read once
    fm.fit(data, steps=a.steps, batch_size=a.batch_size, warm_start=a.resume, source=source,
           progress=not a.no_progress,
           callback=snapshot if (every or a.metrics_every) else None,
           callback_every=math.gcd(every, a.metrics_every),
           checkpoint=ckpt, checkpoint_every=a.checkpoint_every,
           log=_say)
    train_s = time.perf_counter() - t0
    x, traj = fm.sample(2000, method=DEFAULTS["method"], steps=DEFAULTS["sample_steps"],
                        seed=a.seed + 1, record=50)
    np.save(os.path.join(a.out, "samples.npy"), x)
    from .metrics import w2
    fresh = draw(2000, np.random.default_rng([a.seed, 8]))
    metrics = dict(steps=fm.step_, train_seconds=round(train_s, 2),
                   final_loss=float(np.mean(fm.losses_[-200:])), w2=w2(x, fresh))
    if not a.no_plots:
        plots.scatter(os.path.join(a.out, "samples.png"), x, data=ref,
                      title=f"samples after {fm.step_} steps")
        plots.flow_gif(os.path.join(a.out, "flow.gif"), traj, data=ref)
        plots.loss_curve(os.path.join(a.out, "loss.png"), fm.losses_)
        plots.trajectories(os.path.join(a.out, "trajectories.png"), traj, data=ref)
        if fm.spec_.dim == 2:
            plots.vector_field(os.path.join(a.out, "vector_field.png"),
                               lambda xx, tt: fm.velocity(xx, tt), data=ref,
                               lim=float(np.abs(ref).max()) * 1.1)
        if fm.spec_.n_classes:
            _class_pictures(fm, data, a.out, a.seed)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    _say(f"trained {fm.step_} steps in {train_s:.1f} s; W2 to fresh data {metrics['w2']:.4f}; "
         f"outputs in {a.out}/")
    return 0


def cmd_sample(a):
    fm = _load_for_sampling(a)
    if not a.out.endswith(".npy"):
        raise FmnumpyError(f"--out must name a .npy file, got {a.out!r}")
    if a.log_prob:
        x, logp = fm.sample(a.n, method=a.method, steps=a.steps, seed=a.seed,
                            return_logprob=True, rtol=a.rtol, atol=a.atol, qmc=a.qmc)
    else:
        x = fm.sample(a.n, method=a.method, steps=a.steps, seed=a.seed, rtol=a.rtol,
                      atol=a.atol, labels=a.label, guidance=a.guidance, qmc=a.qmc)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    np.save(a.out, x)
    if a.log_prob:
        np.save(a.log_prob, logp)
        _say(f"mean log p of the samples {logp.mean():.4f}; written to {a.log_prob}")
    if a.method == "dopri5":
        _say(f"dopri5: {fm.last_solve_.nfe} function evaluations")
    if a.plot:
        from . import plots
        plots.scatter(a.plot, x, title=f"{a.n} samples, {a.method} {a.steps} steps")
    _say(f"wrote {x.shape[0]} samples of dimension {x.shape[1]} to {a.out}")
    return 0


def cmd_animate(a):
    from . import plots
    fm = _load_for_sampling(a)
    if not a.out.endswith(".gif"):
        raise FmnumpyError(f"--out must name a .gif file, got {a.out!r}")
    if a.frames < 1:
        raise FmnumpyError(f"--frames must be a positive integer, got {a.frames}")
    _, traj = fm.sample(a.n, method=a.method, steps=a.steps, seed=a.seed, record=a.frames)
    plots.flow_gif(a.out, traj, fps=a.fps)
    _say(f"wrote {traj.shape[0]} frames to {a.out}")
    return 0


EVALUATE_KEYS = ("w1", "w2", "mmd", "energy", "npe", "straightness", "nfe")


def cmd_evaluate(a):
    fm = _load_for_sampling(a)
    data = a.data or a.dataset or fm.data_
    if data == "reflow":
        data = reflow.source_data(reflow.ReflowedMatcher.load(a.checkpoint))
    if data in (None, "array", "reflow"):
        raise FmnumpyError("this checkpoint was trained on an in-memory array; pass "
                           "--data FILE or --dataset NAME to compare with")
    if a.n < 2:
        raise FmnumpyError(f"-n must be at least 2, got {a.n}")
    m = fm.evaluate(datasets.as_data(data), n=a.n, seed=a.seed, method=a.method,
                    steps=a.steps, qmc=a.qmc)
    m.update(checkpoint=a.checkpoint, data=str(data), method=a.method, steps=a.steps, qmc=a.qmc,
             source="N(0, I)" if fm.source_ is None else fm.source_.name)
    for k in EVALUATE_KEYS:
        print(f"{k:>13}: {m[k]:.6g}" if isinstance(m[k], float) else f"{k:>13}: {m[k]}")
    if "w2_per_class" in m:
        print(f"{'w2 per class':>13}: " + ", ".join(f"{v:.4g}" for v in m["w2_per_class"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(m, f, indent=1)
    return 0


def cmd_density(a):
    from . import plots
    fm = FlowMatcher.load(a.checkpoint).set_params(threads=a.threads)
    if fm.spec_.dim != 2:
        raise FmnumpyError(f"density needs 2-D data; this model has D = {fm.spec_.dim}")
    if a.grid < 2:
        raise FmnumpyError(f"--grid must be at least 2, got {a.grid}")
    if not a.lim > 0:
        raise FmnumpyError(f"--lim must be positive, got {a.lim}")
    gx, gy, logp = fm.density_grid(lim=a.lim, n_grid=a.grid, steps=a.steps)
    plots.density_image(a.out, gx, gy, logp)
    mass = float(np.exp(logp).sum() * (2 * a.lim / a.grid) ** 2)
    _say(f"wrote {a.out}; the density integrates to {mass:.4f} over the square")
    return 0


def cmd_reflow(a):
    """``fmnumpy reflow``: load, pair, train, compare, write, print the table."""
    positive_int("--pairs", a.pairs)
    for flag, value in (("--steps", a.steps), ("--batch-size", a.batch_size)):
        if value is not None:
            positive_int(flag, value)
    if a.eval_n < 2:
        raise FmnumpyError(f"--eval-n must be at least 2, got {a.eval_n}")
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        raise FmnumpyError(f"--out {a.out} is a file; pass a folder")
    fm = reflow.ReflowedMatcher.load(a.checkpoint)
    fm.threads = a.threads
    ckpt = os.path.join(a.out, "checkpoint.npz")
    os.makedirs(a.out, exist_ok=True)
    new = reflow.reflow(fm, n_pairs=a.pairs, steps=a.steps, batch_size=a.batch_size, seed=a.seed,
                 init=a.init, threads=a.threads, log=_say, progress=not a.no_progress,
                 checkpoint=ckpt)
    data = reflow.source_data(fm)
    draw = None if data is None else datasets.make_sampler(data)
    _say(f"comparing before and after on {a.eval_n} points")
    result = reflow.compare(fm, new, draw, n=a.eval_n, seed=a.seed)
    result.update(checkpoint=str(a.checkpoint), data=data, pairs=a.pairs,
                  steps=new.step_, batch_size=new.batch_size_, init=a.init,
                  train_seconds=round(new.train_seconds_, 2))
    with open(os.path.join(a.out, "reflow.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(reflow.format_table(result))
    _say(f"reflowed {a.pairs} pairs in {new.step_} steps ({new.train_seconds_:.1f} s); "
         f"outputs in {a.out}/")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "animate": cmd_animate,
            "evaluate": cmd_evaluate, "density": cmd_density, "reflow": cmd_reflow}


def _command(a):
    """The command's function; a discrete or manifold checkpoint goes to cli_discrete's
    or cli_manifold's."""
    ckpt = getattr(a, "checkpoint", None)
    if ckpt and os.path.isfile(ckpt):
        from . import cli_discrete, cli_manifold
        from .loop import checkpoint_model
        kind = checkpoint_model(ckpt)
        table = {"discrete": cli_discrete.COMMANDS, "manifold": cli_manifold.COMMANDS}.get(kind)
        if table is not None:
            if a.command not in table:
                raise FmnumpyError(f"{ckpt} holds a {kind} flow-matching model; "
                                   f"`{a.command}` is not for it (use "
                                   f"{' or '.join(table)})")
            return table[a.command]
    return COMMANDS[a.command]


def main(argv=None):
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.command is None:
        ap.print_help()
        return 2
    try:
        return _command(a)(a)
    except FmnumpyError as e:
        _say(f"{PROG} {a.command}: error: {e}")
        return 2
    except KeyboardInterrupt:
        _say(f"{PROG} {a.command}: interrupted")
        return 130
    except OSError as e:
        _say(f"{PROG} {a.command}: error: {e.strerror or e} "
             f"({getattr(e, 'filename', '') or ''}); check the path and permissions")
        return 2


if __name__ == "__main__":
    sys.exit(main())
