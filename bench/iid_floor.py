"""What a perfect sampler scores against the data floor of the workloads of bench/README.md.

The floor is the mean exact W2 between two fresh 2,000-point draws of a data set.
Four of FFJORD's sets (``datasets.STRATIFIED``: moons, pinwheel, rings, circles) are
stratified: fixed counts per component and, except pinwheel, an even grid along
each curve.  A sampler that draws independent points, as any flow from N(0, I)
noise does, cannot be stratified, so even exact independent draws of the same
distribution (``datasets.sample(..., stratified=False)``) sit above that floor.
This script measures how far: for each set, the W2 between independent draws and
fresh data points over the same 20 pairs as the floor, as a ratio to it.

    python bench/iid_floor.py [--pairs 20] [--n 2000] [--out bench/results/iid_floor.json]
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy.euclidean import datasets  # noqa: E402
from fmnumpy.metrics import w2  # noqa: E402

SETS = ("2spirals", "8gaussians", "checkerboard", "moons", "pinwheel", "rings",
        "swissroll", "circles")


def measure(name, pairs, n, seed=10_000):
    """(floor W2s, independent-draw W2s) over ``pairs`` pairs: pair p's fresh data
    ``default_rng([seed, p, 1])`` against ``[seed, p, 0]`` from the generator (the
    floor, as bench/recipe.py draws it) and against ``[seed + 1, p]`` drawn
    independently."""
    floor, iid = [], []
    for p in range(pairs):
        data = datasets.sample(name, n, np.random.default_rng([seed, p, 1]))
        floor.append(w2(datasets.sample(name, n, np.random.default_rng([seed, p, 0])), data))
        iid.append(w2(datasets.sample(name, n, np.random.default_rng([seed + 1, p]),
                                      stratified=False), data))
    return floor, iid


def table(res):
    rows = ["| set | stratified | floor (sd) | independent draws (sd) | ratio mean (min-max) |",
            "|---|---|---|---|---|"]
    for name, r in res["sets"].items():
        f, q = np.mean(r["floor"]), np.asarray(r["iid"])
        rows.append(f"| {name} | {'yes' if name in datasets.STRATIFIED else 'no'} | "
                    f"{f:.4f} ({np.std(r['floor']):.4f}) | {q.mean():.4f} ({q.std():.4f}) | "
                    f"{q.mean() / f:.2f} ({q.min() / f:.2f}-{q.max() / f:.2f}) |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=datasets.DATASETS)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "iid_floor.json"))
    a = ap.parse_args(argv)
    res = {"settings": {"pairs": a.pairs, "n": a.n}, "machine": platform.machine(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sets": {}}
    for name in a.sets:
        floor, iid = measure(name, a.pairs, a.n)
        res["sets"][name] = {"floor": floor, "iid": iid}
        print(f"{name}: floor {np.mean(floor):.4f}, independent {np.mean(iid):.4f} "
              f"({np.mean(iid) / np.mean(floor):.2f}x)", flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(table(res))


if __name__ == "__main__":
    main()
