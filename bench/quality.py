"""Sample quality (bench/README.md, Workloads): train with the given settings on each seed,
draw 2,000 samples (RK4, 100 steps) and measure the exact W2 to 2,000 fresh data
points, against the data floor (W2 between two independent 2,000-point draws,
averaged over ``--floor-pairs`` pairs).  The runs are one ``fmnumpy sweep`` (datasets x
seeds, on a local Dask cluster or ``--scheduler``); a rerun skips the runs that ended.

    python bench/quality.py --dataset 2spirals --seeds 0 1 2 [--steps 20000 ...]
    python bench/quality.py --path sb --sb-sigma 0.5 --coupling ot ...   # another path
"""
import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from fmnumpy import DEFAULTS, FlowMatcher  # noqa: E402
from fmnumpy.euclidean import datasets
from fmnumpy.metrics import w2  # noqa: E402


def data_floor(name, n, pairs, seed=10_000):
    vals = []
    for p in range(pairs):
        a = datasets.sample(name, n, np.random.default_rng([seed, p, 0]))
        b = datasets.sample(name, n, np.random.default_rng([seed, p, 1]))
        vals.append(w2(a, b))
    return float(np.mean(vals)), float(np.std(vals))


OPTIONS = ("steps", "batch_size", "hidden", "activation", "lr", "warmup", "schedule",
           "ema_decay", "time_freqs", "coupling", "clip", "path", "time_power", "sb_sigma")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", nargs="+", default=[DEFAULTS["dataset"]])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    ap.add_argument("--hidden", default=",".join(map(str, DEFAULTS["hidden"])))
    ap.add_argument("--activation", default=DEFAULTS["activation"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    ap.add_argument("--schedule", default=DEFAULTS["schedule"])
    ap.add_argument("--ema-decay", type=float, default=DEFAULTS["ema_decay"])
    ap.add_argument("--time-freqs", type=int, default=DEFAULTS["time_freqs"])
    ap.add_argument("--coupling", default=DEFAULTS["coupling"])
    ap.add_argument("--clip", type=float, default=DEFAULTS["clip"])
    ap.add_argument("--path", default=DEFAULTS["path"], help="straight, cosine or sb")
    ap.add_argument("--time-power", type=float, default=DEFAULTS["time_power"],
                    help="t = 1 - (1 - u)^K of uniform u (1: uniform; default: by path)")
    ap.add_argument("--sb-sigma", type=float, default=DEFAULTS["sb_sigma"],
                    help="noise of --path sb")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--floor-pairs", type=int, default=10)
    ap.add_argument("--out", default=None, help="write a JSON record here")
    common.sweep_arguments(ap)
    a = ap.parse_args(argv)
    hidden = tuple(int(h) for h in a.hidden.split(","))
    given = dict(vars(a), hidden=hidden)
    fixed = {k: common.train_option(given[k]) for k in OPTIONS      # the defaults left out
             if given[k] != DEFAULTS[k]}
    runs = common.run_sweep({"family": "euclidean", "seeds": a.seeds, "fixed": fixed,
                             "grid": {"dataset": a.dataset}}, "quality", a)
    records = []
    for name in a.dataset:
        floor, floor_sd = data_floor(name, a.n, a.floor_pairs)
        w2s, secs = [], []
        for seed in a.seeds:
            folder = next(f for r, f in runs if r.seed == seed and r.options["dataset"] == name)
            fm = FlowMatcher.load(os.path.join(folder, "checkpoint.npz"))
            with open(os.path.join(folder, "metrics.json")) as f:
                secs.append(json.load(f)["train_seconds"])
            x = fm.sample(a.n, method="rk4", steps=100, seed=1000 + seed)
            fresh = datasets.sample(name, a.n, np.random.default_rng([20_000, seed]))
            w2s.append(w2(x, fresh))
            print(f"{name} seed {seed}: W2 {w2s[-1]:.4f}  train {secs[-1]:.1f} s", flush=True)
        rec = dict(dataset=name, coupling=a.coupling, path=a.path,
                   sb_sigma=a.sb_sigma if a.path == "sb" else None, time_power=fm.time_power,
                   ema_decay=a.ema_decay, clip=a.clip,
                   seeds=a.seeds, steps=a.steps, batch_size=a.batch_size,
                   hidden=hidden, activation=a.activation, lr=a.lr, w2=w2s,
                   w2_mean=float(np.mean(w2s)), floor=floor, floor_sd=floor_sd,
                   ratio=float(np.mean(w2s)) / floor, train_seconds=secs,
                   workers=a.workers, threads_per_run=a.threads_per_run,
                   machine=platform.processor() or platform.machine())
        print(f"{name}: mean W2 {rec['w2_mean']:.4f}  floor {floor:.4f} (sd {floor_sd:.4f})  "
              f"ratio {rec['ratio']:.3f}  train {np.mean(secs):.1f} s", flush=True)
        records.append(rec)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(records, f, indent=1)
    return records


if __name__ == "__main__":
    main()
