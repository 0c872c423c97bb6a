"""``fmnumpy`` for flow matching on R^D: train, sample, animate, evaluate, density,
reflow.  Its options and defaults are FlowMatcher's (``cli/common.py`` refuses the
other families' options before these run)."""
import json
import math
import os

import numpy as np

from fmnumpy.cli import common
from fmnumpy.cli.common import say
from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.euclidean import datasets, reflow
from fmnumpy.euclidean.estimator import DEFAULTS, FlowMatcher

SAMPLING = dict(n=2000, seed=1, rtol=1e-5, atol=1e-5, guidance=1.0, qmc=False, frames=50,
                fps=20)


def _load_for_sampling(a):
    """The checkpoint's FlowMatcher on the asked device and threads, and the sampling
    options not given set to their defaults (method and steps: the model's,
    ``FlowMatcher.default_sampler``)."""
    common.fill(a, SAMPLING)
    fm = FlowMatcher.load(a.checkpoint)
    fm = fm.set_params(threads=a.threads, device=a.device or "cpu").require_device()
    a.method, a.steps = fm.default_sampler(a.method, a.steps)
    return fm


def model(a):
    """The FlowMatcher that ``fmnumpy train`` trains anew: the options given, FlowMatcher's
    defaults for the rest."""
    if a.sb_sigma is not None and (a.path or DEFAULTS["path"]) != "sb":
        raise FmnumpyError(f"--sb-sigma is the noise of --path sb; drop it or add "
                           f"--path sb (got --path {a.path or DEFAULTS['path']})")
    params = common.model_options(a, FlowMatcher)
    if a.sinkhorn_reg is not None:
        params["coupling_options"] = {"reg": a.sinkhorn_reg}
    return FlowMatcher(**params)


def _train_data(a, name, resumed=None):
    """(the training data of ``fmnumpy train``, read once: a toy set or file, with the
    toy set's labels (--conditional) or a file's label column (--label-column K); the
    conditions (N, K) of a file's --condition-columns, or None)."""
    if a.condition_columns is not None:
        if a.data is None:
            raise FmnumpyError("--condition-columns takes the conditions from your file; add "
                               "--data FILE")
        cols = common.parse_numbers("--condition-columns", a.condition_columns, int)
        rows, c = datasets.split_columns(datasets.load_data(a.data), cols, a.data)
        return datasets.Data(rows), c
    if a.condition_embedding is not None:
        raise FmnumpyError("--condition-embedding embeds the condition of --condition-columns; "
                           "add them, or drop --condition-embedding")
    if resumed is not None and resumed.spec_.n_cond:
        raise FmnumpyError("this checkpoint was trained with conditions; pass "
                           "--condition-columns K,... with --data FILE")
    return _labelled_data(a, name, resumed), None


def _labelled_data(a, name, resumed):
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
    from fmnumpy.plots import euclidean as plots
    K = fm.spec_.n_classes
    x, y = data.draw_labeled(n * K, np.random.default_rng([seed, 7]))
    plots.classes(os.path.join(out, "classes.png"),
                  [fm.sample(n, labels=k, seed=seed + 10 + k) for k in range(K)],
                  data=[x[y == k] for k in range(K)], title="samples of each class (w = 1)")
    want = np.arange(n * 2) % K
    plots.guidance_sweep(os.path.join(out, "guidance.png"),
                         {w: (fm.sample(want.shape[0], labels=want, guidance=w, seed=seed + 3),
                              want) for w in weights})


def _jump_pictures(fm, ref, out, seed, jumps=(1, 2, 4), n=2000):
    """jumps.png: the same source points after 1, 2 and 4 jumps of the map and after RK4
    100 on its diagonal, over the data."""
    from fmnumpy.plots import euclidean as plots
    x0 = fm.draw_source(n, np.random.default_rng([seed, 6]))
    xs = [fm.sample(x0=x0, method="jump", steps=k) for k in jumps]
    xs.append(fm.sample(x0=x0, method="rk4", steps=100))
    plots.classes(os.path.join(out, "jumps.png"), xs, data=[ref] * len(xs),
                  titles=[f"{k} jump{'s' if k > 1 else ''}" for k in jumps]
                  + ["RK4 100 on the diagonal"], title=f"{fm.objective}: one network, "
                  "sampled in jumps")


def cmd_train(a):
    """Train flow matching on R^D: checkpoint.npz, scatter snapshots, samples.png,
    flow.gif, loss.png, vector_field.png, trajectories.png, samples.npy, metrics.json."""
    from fmnumpy.plots import euclidean as plots
    common.fill(a, dict(metrics_every=0))
    data = a.data if a.data is not None else (a.dataset or DEFAULTS["dataset"])
    fm, ckpt = common.open_model(a, FlowMatcher, model, keep=("device",))
    if a.resume:
        if fm.data_ not in (None, "array") and a.data is None and a.dataset is None:
            data = fm.data_
        had = None if fm.source_ is None else fm.source_.name
        if a.source is not None and a.source != had:
            raise FmnumpyError(f"{ckpt} was trained from the source {had or 'N(0, I)'}; "
                               f"--resume continues it, so drop --source {a.source}")
        fm.set_params(device=a.device or fm.device)
    fm.require_device()
    a.steps, a.batch_size = common.run_length(a, fm)
    common.resume_from(a, fm, ckpt, a.steps)
    data, conditions = _train_data(a, data, fm if a.resume else None)   # read and checked once
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
            x = (model.sample(1000, seed=k) if model.spec_.flow_map      # its jumps
                 else model.sample(1000, method="euler", steps=50, seed=k))
            plots.scatter(os.path.join(a.out, plots.scatter_epoch_name(k // every)), x,
                          data=ref, title=f"step {k}")
        if a.metrics_every and k % a.metrics_every == 0:
            from fmnumpy.metrics import evaluate
            x = (model.sample(held_out.shape[0], seed=k) if model.spec_.flow_map
                 else model.sample(held_out.shape[0], method="rk4", steps=20, seed=k))
            m = dict(step=k, loss=float(np.mean(model.losses_[-100:])),
                     **evaluate(x, held_out))
            with open(metrics_log, "a") as f:
                f.write(json.dumps(m) + "\n")
            say(f"step {k}: loss {m['loss']:.4f}, W2 {m['w2']:.4f}, MMD {m['mmd']:.2e}, "
                 f"energy {m['energy']:.2e}")

    source = None if a.source is None else datasets.as_data(a.source)   # read once
    more = {} if conditions is None else {"conditions": conditions}
    train_s = common.fit_timed(a, fm, data, a.steps, a.batch_size, ckpt, source=source, **more,
                               callback=snapshot if (every or a.metrics_every) else None,
                               callback_every=math.gcd(every, a.metrics_every))
    x, traj = fm.sample(2000, seed=a.seed + 1, record=fm.spec_.flow_map or 50)
    np.save(os.path.join(a.out, "samples.npy"), x)
    from fmnumpy.metrics import w2
    fresh = draw(2000, np.random.default_rng([a.seed, 8]))
    metrics = dict(steps=fm.step_, train_seconds=round(train_s, 2),
                   final_loss=float(np.mean(fm.losses_[-200:])), w2=w2(x, fresh))
    if not a.no_plots:
        plots.scatter(os.path.join(a.out, "samples.png"), x, data=ref,
                      title=f"samples after {fm.step_} steps")
        from fmnumpy.euclidean.flowmap import jump_frames     # a map's jumps, drawn in frames
        plots.flow_gif(os.path.join(a.out, "flow.gif"),
                       jump_frames(traj) if fm.spec_.flow_map else traj, data=ref)
        plots.loss_curve(os.path.join(a.out, "loss.png"), fm.losses_)
        plots.trajectories(os.path.join(a.out, "trajectories.png"), traj, data=ref)
        if fm.spec_.dim == 2:
            plots.vector_field(os.path.join(a.out, "vector_field.png"),
                               lambda xx, tt: fm.velocity(xx, tt), data=ref,
                               lim=float(np.abs(ref).max()) * 1.1)
        if fm.spec_.n_classes:
            _class_pictures(fm, data, a.out, a.seed)
        if fm.spec_.flow_map:
            _jump_pictures(fm, ref, a.out, a.seed)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    say(f"trained {fm.step_} steps in {train_s:.1f} s; W2 to fresh data {metrics['w2']:.4f}; "
         f"outputs in {a.out}/")
    return 0


def cmd_sample(a):
    fm = _load_for_sampling(a)
    if not a.out.endswith(".npy"):
        raise FmnumpyError(f"--out must name a .npy file, got {a.out!r}")
    condition = (None if a.condition is None
                 else common.parse_numbers("--condition", a.condition, float))
    if a.log_prob:
        x, logp = fm.sample(a.n, method=a.method, steps=a.steps, seed=a.seed,
                            return_logprob=True, rtol=a.rtol, atol=a.atol, qmc=a.qmc,
                            noise=a.noise, labels=a.label, guidance=a.guidance,
                            condition=condition)
    else:
        x = fm.sample(a.n, method=a.method, steps=a.steps, seed=a.seed, rtol=a.rtol,
                      atol=a.atol, labels=a.label, guidance=a.guidance, qmc=a.qmc,
                      noise=a.noise, condition=condition)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    np.save(a.out, x)
    if a.log_prob:
        np.save(a.log_prob, logp)
        say(f"mean log p of the samples {logp.mean():.4f}; written to {a.log_prob}")
    if a.method == "dopri5":
        say(f"dopri5: {fm.last_solve_.nfe} function evaluations")
    if a.plot:
        from fmnumpy.plots import euclidean as plots
        plots.scatter(a.plot, x, title=f"{a.n} samples, {a.method} {a.steps} steps")
    say(f"wrote {x.shape[0]} samples of dimension {x.shape[1]} to {a.out}")
    return 0


def cmd_animate(a):
    from fmnumpy.plots import euclidean as plots
    fm = _load_for_sampling(a)
    if not a.out.endswith(".gif"):
        raise FmnumpyError(f"--out must name a .gif file, got {a.out!r}")
    if a.frames < 1:
        raise FmnumpyError(f"--frames must be a positive integer, got {a.frames}")
    _, traj = fm.sample(a.n, method=a.method, steps=a.steps, seed=a.seed, record=a.frames)
    if str(a.method).lower() == "jump":            # K + 1 states: drawn along the jumps
        from fmnumpy.euclidean.flowmap import jump_frames
        traj = jump_frames(traj, max(1, a.frames // (traj.shape[0] - 1)))
    plots.flow_gif(a.out, traj, fps=a.fps)
    say(f"wrote {traj.shape[0]} frames to {a.out}")
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
    common.print_metrics(m, EVALUATE_KEYS + (("w2_per_class",) if "w2_per_class" in m else ()),
                         a.json)
    return 0


def cmd_density(a):
    from fmnumpy.plots import euclidean as plots
    common.fill(a, dict(grid=80, lim=4.0, steps=20))
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
    say(f"wrote {a.out}; the density integrates to {mass:.4f} over the square")
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
    fm = reflow.ReflowedMatcher.load(a.checkpoint).set_params(threads=a.threads)
    ckpt = os.path.join(a.out, "checkpoint.npz")
    os.makedirs(a.out, exist_ok=True)
    new = reflow.reflow(fm, n_pairs=a.pairs, steps=a.steps, batch_size=a.batch_size, seed=a.seed,
                 init=a.init, threads=a.threads, log=say, progress=not a.no_progress,
                 checkpoint=ckpt)
    data = reflow.source_data(fm)
    draw = None if data is None else datasets.make_sampler(data)
    say(f"comparing before and after on {a.eval_n} points")
    result = reflow.compare(fm, new, draw, n=a.eval_n, seed=a.seed)
    result.update(checkpoint=str(a.checkpoint), data=data, pairs=a.pairs,
                  steps=new.step_, batch_size=new.batch_size_, init=a.init,
                  train_seconds=round(new.train_seconds_, 2))
    with open(os.path.join(a.out, "reflow.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(reflow.format_table(result))
    say(f"reflowed {a.pairs} pairs in {new.step_} steps ({new.train_seconds_:.1f} s); "
         f"outputs in {a.out}/")
    return 0



COMMANDS = {"train": cmd_train, "sample": cmd_sample, "animate": cmd_animate,
            "evaluate": cmd_evaluate, "density": cmd_density, "reflow": cmd_reflow}
