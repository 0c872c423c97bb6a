"""The Fourier features of x in more than two dimensions: which directions the default
plane waves take (``x_dirs``), paired over seeds on 8-, 32- and 64-dimensional data.

    python bench/x_freqs_dims.py [--datasets gmm8d gmm32d digits] [--configs diagonals axes none]
                                 [--plan gmm8d=diagonals,axes,none gmm32d=axes,none ...]
                                 [--seeds 0 1 2] [--workers 2] [--out bench/results/x_freqs_dims]

Configurations (every other option at FlowMatcher's default, 20,000 steps of 256):
``diagonals`` x_freqs 3 along the D axes and D (D - 1) diagonals (D + 6 D^2 inputs, the
0.1.0 default in every dimension), ``axes`` x_freqs 3 along the axes only (7 D
inputs), ``none`` x_freqs 0 (D inputs).  Each run trains with threads=1 in its own
process (``--workers`` at a time).

Scores: exact W2 of n samples (RK4, 100 steps) against n fresh points, and the floor
(W2 of two independent n-point draws, mean of 20 pairs).  gmm8d and gmm32d (n = 2,000)
are drawn fresh (gmm4d, the same mixture in 4-D, trains on 400,000 fixed draws and
is scored against fresh ones); ``digits`` is scikit-learn's 1,797 8 x 8 images (64-D, pixels 0..16,
scaled by 1/16 to [0, 1]; bench only: ``pip install scikit-learn``), split once into
1,297 training rows and 500 test rows: the model trains on the training rows, n = 500
samples are scored against the test rows, and the floor is W2 between 500 training
rows and the test rows (20 draws of the training rows).
"""
import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = {"diagonals": dict(x_freqs=3, x_dirs="diagonals"),
           "axes": dict(x_freqs=3, x_dirs="axes"),
           "none": dict(x_freqs=0)}


def digits_split():
    from sklearn.datasets import load_digits
    x = load_digits().data.astype(np.float64) / 16.0
    perm = np.random.default_rng(0).permutation(x.shape[0])
    return x[perm[:1297]], x[perm[1297:]]


def gmm4d(n, rng):
    from fmnumpy.euclidean.datasets import gaussian_mixture
    return gaussian_mixture(n, rng, dim=4)


def draw(name, n, rng):
    """n fresh points of a named set (gmm4d: fmnumpy's Gaussian mixture in 4-D)."""
    from fmnumpy.euclidean import datasets
    return gmm4d(n, rng) if name == "gmm4d" else datasets.sample(name, n, rng)


def data(name):
    """(train: a name or an array, test: None (fresh draws) or an array, n).  gmm4d,
    not a named set, trains on 400,000 fresh draws (more than 20,000 steps of 256 use:
    no row repeats within a run)."""
    if name == "digits":
        train, test = digits_split()
        return train, test, 500
    if name == "gmm4d":
        return gmm4d(400_000, np.random.default_rng(40_000)), None, 2000
    return name, None, 2000


def floor(name, pairs=20):
    from fmnumpy.metrics import w2
    train, test, n = data(name)
    vals = []
    for p in range(pairs):
        rng = np.random.default_rng([20_000, p])
        if test is None:
            vals.append(w2(draw(name, n, rng), draw(name, n, rng)))
        else:
            vals.append(w2(train[rng.choice(train.shape[0], n, replace=False)], test))
    return float(np.mean(vals)), float(np.std(vals, ddof=1))


def one_run(args):
    name, config, seed = args
    from fmnumpy import FlowMatcher
    from fmnumpy.metrics import w2
    train, test, n = data(name)
    fm = FlowMatcher(seed=seed, threads=1, **CONFIGS[config])
    t0 = time.perf_counter()
    fm.fit(train, steps=20000, batch_size=256)
    seconds = time.perf_counter() - t0
    x = fm.sample(n, seed=seed + 1)
    ref = draw(name, n, np.random.default_rng([30_000, seed])) if test is None else test
    return dict(dataset=name, config=config, seed=seed, w2=w2(x, ref),
                train_seconds=seconds, inputs=int(fm.spec_.sizes[0]),
                params=int(fm.spec_.n_params))


def table(records, floors):
    lines = ["| dataset | config | inputs | W2 / floor: mean (min - max) | train s: mean "
             "(min - max) |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in records):
        f = floors[name][0]
        for config in dict.fromkeys(r["config"] for r in records if r["dataset"] == name):
            rs = [r for r in records if r["dataset"] == name and r["config"] == config]
            q = np.array([r["w2"] / f for r in rs])
            s = np.array([r["train_seconds"] for r in rs])
            lines.append(f"| {name} | {config} | {rs[0]['inputs']} | {q.mean():.3f} "
                         f"({q.min():.3f} - {q.max():.3f}) | {s.mean():.1f} "
                         f"({s.min():.1f} - {s.max():.1f}) |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["gmm8d", "gmm32d", "digits"])
    ap.add_argument("--configs", nargs="+", default=["diagonals", "axes", "none"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--plan", nargs="+", default=None, metavar="DATASET=CONFIG,...",
                    help="configurations per dataset, instead of every one on each "
                    "(e.g. gmm8d=diagonals,axes,none gmm32d=axes,none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="bench/results/x_freqs_dims")
    a = ap.parse_args(argv)
    plan = ({d: c.split(",") for d, c in (p.split("=") for p in a.plan)} if a.plan
            else {d: a.configs for d in a.datasets})
    a.datasets = list(plan)
    jobs = [(d, c, s) for d in plan for s in a.seeds for c in plan[d]]
    floors = {d: floor(d) for d in a.datasets}
    records = []
    with ProcessPoolExecutor(a.workers) as pool:
        for r in pool.map(one_run, jobs):
            records.append(r)
            print(json.dumps(r), flush=True)
            with open(a.out + ".json", "w") as f:
                json.dump(dict(records=records, floors=floors, machine=platform.machine(),
                               cpus=os.cpu_count(), argv=sys.argv), f, indent=1)
    md = (f"W2 / floor of FlowMatcher's defaults with three choices of the plane-wave "
          f"directions, 20,000 steps of 256, each run on one thread in its own process "
          f"({a.workers} at a time); {platform.machine()}, {os.cpu_count()} CPUs.\n\n"
          f"`python bench/x_freqs_dims.py {' '.join(sys.argv[1:])}`\n\n"
          + table(records, floors) + "\n\nfloors (mean, sd over 20 pairs): "
          + ", ".join(f"{k} {v[0]:.4f} ({v[1]:.4f})" for k, v in floors.items()) + "\n")
    with open(a.out + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
