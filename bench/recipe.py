"""Euclidean training recipes compared on the eight FFJORD sets, paired: for each
(dataset, seed) every configuration trains with that seed (the same batches where the
configurations share batch size and time sampling), samples from the same prior draw
and is scored against the same 2,000 fresh data points (exact W2, the workloads of bench/README.md), as a
ratio to the data floor (the mean W2 between two fresh 2,000-point draws over 20
pairs).  Configurations alternate within a seed, so drift of the machine's speed hits
them alike.  The runs are one ``fmnumpy sweep`` (each configuration a [configs.NAME],
times the datasets, times the seeds) on a local Dask cluster of ``--workers`` processes
or on ``--scheduler``; an interrupted benchmark rerun skips the runs that ended and
resumes the others from their checkpoints.

    python bench/recipe.py [--datasets 2spirals ...] [--configs default fourier ...]
        [--seeds 0 1 2] [--steps 20000] [--out bench/results/recipe.json]
        [--workers 2 --threads-per-run 1 | --scheduler ADDRESS]

Scores every trained run by the protocol, writes the JSON and prints a table: per
configuration and dataset the mean W2 / floor with its range over seeds, and the
training seconds.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from fmnumpy import DEFAULTS, FlowMatcher  # noqa: E402
from fmnumpy.euclidean import datasets
from fmnumpy.metrics import w2  # noqa: E402

SETS = ("2spirals", "8gaussians", "checkerboard", "moons", "pinwheel", "rings",
        "swissroll", "circles")
# Each configuration: FlowMatcher options, plus "steps" and "batch_size" for fit.
CONFIGS = {
    "default": {},
    "old": {"hidden": (256, 256, 256), "x_freqs": 0},             # the recipe before x_freqs
    "fourier256": {"hidden": (256, 256, 256), "x_freqs": 2},
    "fourier128": {"hidden": (128, 128, 128), "x_freqs": 3},
    "tp3": {"time_power": 3.0},                                  # more training near t = 1
    "xf4": {"x_freqs": 4},                                       # one octave finer
    "b512": {"batch_size": 512},
    "lr4": {"lr": 4e-3},
    "deep4": {"hidden": (128, 128, 128, 128), "lr": 4e-3},             # 4 x 128, lr 4e-3
    "deep4_30k": {"hidden": (128, 128, 128, 128), "lr": 4e-3, "steps": 30000},
}
FLOOR_PAIRS = 20
N = 2000


def data_floor(name, pairs=FLOOR_PAIRS, n=N, seed=10_000, stratified=True):
    vals = [w2(datasets.sample(name, n, np.random.default_rng([seed, p, 0]), stratified=stratified),
               datasets.sample(name, n, np.random.default_rng([seed, p, 1]), stratified=stratified))
            for p in range(pairs)]
    return float(np.mean(vals)), float(np.std(vals))


def sweep_spec(configs, datasets_, seeds, steps):
    """The sweep of the comparison: each configuration a [configs.NAME] of train options
    (its own steps, else ``steps``), times the datasets, times the seeds."""
    named = {}
    for c in configs:
        opts = dict(CONFIGS[c])
        named[c] = {k: common.train_option(v) for k, v in dict(steps=opts.pop("steps", steps),
                                                              **opts).items()}
    return {"family": "euclidean", "seeds": list(seeds), "configs": named,
            "grid": {"dataset": list(datasets_)}, "baseline": {"config": configs[0]}}


def score(folder, name, seed, fresh, fresh_iid):
    """One trained run, by the protocol: N samples (RK4 100 steps, EMA weights, prior draw
    default_rng(1000 + seed)), and as many quasi-random ones, against the fresh data."""
    fm = FlowMatcher.load(os.path.join(folder, "checkpoint.npz"))
    with open(os.path.join(folder, "metrics.json")) as f:
        m = json.load(f)
    x = fm.sample(N, seed=1000 + seed)
    run = {"dataset": name, "seed": seed, "steps": m["steps"], "batch_size": fm.batch_size_,
           "train_s": m["train_seconds"], "w2": float(w2(x, fresh)),
           "w2_qmc": float(w2(fm.sample(N, seed=1000 + seed, qmc=True), fresh))}
    run["w2_iid"] = float(w2(x, fresh_iid)) if name in datasets.STRATIFIED else run["w2"]
    return run


def table(res, key="w2", floors="floors"):
    """Markdown table of run[key] / res[floors][name] per configuration and set."""
    rows = ["| configuration | " + " | ".join(res["datasets"]) + " | train s |",
            "|---|" + "---|" * (len(res["datasets"]) + 1)]
    for config in res["configs"]:
        cells, secs = [], []
        for name in res["datasets"]:
            runs = [r for r in res["runs"] if r["config"] == config and r["dataset"] == name
                    and key in r]
            if not runs:
                cells.append("")
                continue
            q = [r[key] / res[floors][name][0] for r in runs]
            secs += [r["train_s"] for r in runs]
            cells.append(f"{np.mean(q):.2f} ({min(q):.2f}-{max(q):.2f})")
        rng = f"{np.mean(secs):.1f} ({min(secs):.1f}-{max(secs):.1f})" if secs else ""
        rows.append(f"| {config} | " + " | ".join(cells) + f" | {rng} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(SETS))
    ap.add_argument("--configs", nargs="+", default=["old", "default"], choices=list(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "recipe.json"))
    common.sweep_arguments(ap)
    a = ap.parse_args(argv)
    res = {"settings": {"steps": a.steps, "n": N, "floor_pairs": FLOOR_PAIRS,
                        "sampler": "rk4, 100 steps, EMA weights", "workers": a.workers,
                        "threads_per_run": a.threads_per_run},
           "configs": {c: {k: list(v) if isinstance(v, tuple) else v
                           for k, v in CONFIGS[c].items()} for c in a.configs},
           "datasets": a.datasets, "seeds": a.seeds,
           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "floors": {}, "floors_iid": {},
           "runs": []}
    runs = common.run_sweep(sweep_spec(a.configs, a.datasets, a.seeds, a.steps), "recipe", a)
    for name in a.datasets:
        res["floors"][name] = data_floor(name)
        # independent draws: the same set without stratification (datasets.STRATIFIED)
        res["floors_iid"][name] = (data_floor(name, stratified=False)
                                   if name in datasets.STRATIFIED else res["floors"][name])
        for seed in a.seeds:
            fresh = datasets.sample(name, N, np.random.default_rng([20_000, seed]))
            fresh_iid = datasets.sample(name, N, np.random.default_rng([20_001, seed]),
                                        stratified=False)
            for config in a.configs:
                folder = next(f for r, f in runs if r.seed == seed and dict(r.config) ==
                              {"config": config, "dataset": name})
                run = dict(score(folder, name, seed, fresh, fresh_iid), config=config)
                res["runs"].append(run)
                print(f"{name} seed {seed} {config}: W2 {run['w2']:.4f} "
                      f"({run['w2'] / res['floors'][name][0]:.2f}x floor) "
                      f"train {run['train_s']:.1f} s", flush=True)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    print(table(res))
    print("\nAgainst independent draws of the same sets (W2 / their floor):")
    print(table(res, "w2_iid", "floors_iid"))
    print("\nQuasi-random source points (sample(qmc=True)) against the protocol's data:")
    print(table(res, "w2_qmc"))
    return res


if __name__ == "__main__":
    main()
