"""``fmnumpy sbi train | sample``: simulation-based inference on the sbibm tasks with a
posterior flow (fmnumpy/sbi/, docs/sbi.md)."""
import glob
import os

import numpy as np

from fmnumpy.cli.common import (fill, parse_numbers, resume_refusal, resumed_conflicts, say,
                                write_json)
from fmnumpy.errors import FmnumpyError, positive_int


def _observation(q, a):
    """(x_obs, the parameters that made it or None) of ``sbi sample``: --x, or a
    simulation of parameters drawn from the prior with --true-seed."""
    from fmnumpy.sbi import get_task
    if a.x is not None:
        return np.array(parse_numbers("--x", a.x, float)), None
    if q.task is None:
        raise FmnumpyError("this posterior has no task to simulate from; pass --x")
    task = get_task(q.task)
    theta = task.prior(1, np.random.default_rng([a.true_seed, 43]))
    return task.simulate(theta, np.random.default_rng([a.true_seed, 44]))[0], theta[0]


def _resume_options(a):
    """``sbi train``'s run options: with --resume, those not given are the checkpoint's in
    OUT (the run kept, or one run of each weight decay), one given with another value is
    one line; then the defaults."""
    from fmnumpy.sbi import PosteriorFlow, get_task
    if a.task is not None:
        a.task = get_task(a.task).name
    runs = sorted(glob.glob(os.path.join(a.out, "weight_decay_*", "checkpoint.npz")))
    kept = os.path.join(a.out, "checkpoint.npz")
    found = [p for p in [kept] + runs if os.path.isfile(p)]
    if a.resume and not found:
        raise FmnumpyError(f"--resume continues the run in --out, but {kept} does not exist; "
                           "drop --resume to start one")
    if a.resume:
        q = PosteriorFlow.load(found[0])
        resumed_conflicts(a, q, found[0], ("task", "simulations_", "seed",
                                           "condition_embedding", "batch_size_"),
                          rename={"simulations_": "simulations", "batch_size_": "batch_size"})
        decays = [PosteriorFlow.load(p).weight_decay for p in runs] or [q.weight_decay]
        fill(a, dict(task=q.task, simulations=q.simulations_, seed=q.seed,
                     condition_embedding=q.condition_embedding, batch_size=q.batch_size_,
                     steps=q.total_steps_, weight_decay=",".join(f"{w:g}" for w in decays)))
    if a.task is None:
        raise FmnumpyError("sbi train needs --task (or --resume of a run in --out)")
    fill(a, dict(simulations=10_000, seed=0, weight_decay="0", batch_size=256))


def _weight_decays(a):
    decays = parse_numbers("--weight-decay", a.weight_decay, float)
    if len(set(decays)) != len(decays):
        raise FmnumpyError(f"--weight-decay takes distinct values, got {a.weight_decay}")
    return decays


def _fit(a, task, theta, x, path, weight_decay):
    """The posterior flow of one weight decay trained on (theta, x), its checkpoint at
    ``path``; with --resume continued from there when it exists."""
    from fmnumpy.sbi import PosteriorFlow
    resume = bool(a.resume) and os.path.isfile(path)
    if resume:
        q = PosteriorFlow.load(path).set_params(threads=a.threads)
        if q.weight_decay != weight_decay:
            raise resume_refusal(path, "weight_decay", f"{q.weight_decay:g}", a.weight_decay)
        say(f"resuming from {path} at step {q.step_}")
    else:
        q = PosteriorFlow(task=task.name, seed=a.seed, threads=a.threads,
                          weight_decay=weight_decay,
                          condition_embedding=a.condition_embedding or ())
    q.fit_simulations(theta, x, steps=a.steps, batch_size=a.batch_size, warm_start=resume,
                      progress=not a.no_progress, log=say, checkpoint=path,
                      checkpoint_every=1000)
    q.save(path)
    return q


def cmd_train(a):
    """Simulate, train, save checkpoint.npz, metrics.json and posterior.png (a pair plot of
    the posterior of one fresh observation, its true parameters marked).  Several
    --weight-decay values: one run each in OUT/weight_decay_W/ (each with its checkpoint,
    each resumable), the one of lowest held-out loss kept as OUT/checkpoint.npz."""
    from fmnumpy.plots.sbi import pair_plot
    from fmnumpy.sbi import get_task, select_posterior, simulate
    _resume_options(a)
    task = get_task(a.task)
    n = positive_int("--simulations", a.simulations)
    decays = _weight_decays(a)
    os.makedirs(a.out, exist_ok=True)
    ckpt = os.path.join(a.out, "checkpoint.npz")
    theta, x = simulate(task, n, seed=a.seed)
    losses = {}
    if len(decays) == 1:
        q = _fit(a, task, theta, x, ckpt, decays[0])
    else:
        flows = []
        for k, w in enumerate(decays):
            path = os.path.join(a.out, f"weight_decay_{w:g}", "checkpoint.npz")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            say(f"weight decay {w:g} ({k + 1} of {len(decays)})")
            flows.append(_fit(a, task, theta, x, path, w))
        q, held = select_posterior(flows)
        losses = {f"{w:g}": v for w, v in zip(decays, held)}
        q.save(ckpt)
        say(f"kept weight decay {q.weight_decay:g}, of the lowest held-out loss ("
            + ", ".join(f"{w}: {v:.4f}" for w, v in losses.items()) + ")")
    a.x, a.true_seed = None, q.seed
    x_obs, truth = _observation(q, a)
    s = q.sample_posterior(x_obs, 5000, seed=q.seed)
    pair_plot(os.path.join(a.out, "posterior.png"), s, None, truth,
              title=f"{task.name}: q(theta | x) of a fresh observation, {n:,} simulations")
    metrics = {"task": task.name, "simulations": n, "steps": q.step_,
               "train_seconds": round(q.train_seconds_, 2),
               "final_loss": float(np.mean(q.losses_[-200:])),
               "weight_decay": q.weight_decay}
    if losses:
        metrics["held_out_loss"] = losses
    write_json(os.path.join(a.out, "metrics.json"), metrics)
    say(f"trained {q.step_} steps on {n} simulations of {task.name} in "
        f"{q.train_seconds_:.1f} s; outputs in {a.out}/")
    return 0


def cmd_sample(a):
    from fmnumpy.sbi import PosteriorFlow
    if not a.out.endswith(".npy"):
        raise FmnumpyError(f"--out must name a .npy file, got {a.out!r}")
    q = PosteriorFlow.load(a.checkpoint).set_params(threads=a.threads)
    x_obs, truth = _observation(q, a)
    if a.log_prob:
        s, logq = q.sample_posterior(x_obs, a.n, seed=a.seed, return_logprob=True)
        np.save(a.log_prob, logq)
    else:
        s = q.sample_posterior(x_obs, a.n, seed=a.seed)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    np.save(a.out, s)
    if a.plot:
        from fmnumpy.plots.sbi import pair_plot
        pair_plot(a.plot, s, None, truth, title=f"q(theta | x), x = {np.round(x_obs, 3)}")
    say(f"wrote {s.shape[0]} posterior samples of dimension {s.shape[1]} to {a.out}")
    return 0


def cmd_sbi(a):
    if a.sbi_command is None:
        raise FmnumpyError("fmnumpy sbi takes a command: train or sample")
    return {"train": cmd_train, "sample": cmd_sample}[a.sbi_command](a)
