"""How much of the conditional target ut is predictable from (xt, t): a Monte Carlo
estimate of E|E[ut | xt]|^2 / E|ut|^2 for each dataset of ``manifold_datasets`` in
three time windows, E[ut | xt] taken as the mean of ut over a fine grid of cells
(64 x 32 in longitude x sin latitude on S^2, 48 x 48 on T^2).  The mean over a cell
of a target with no signal is not exactly 0, so about 0.2% is this estimate's noise.

    python bench/manifold_signal.py [--n 1000000]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy.manifold import datasets as mdata  # noqa: E402
from fmnumpy.manifold import manifolds as mf  # noqa: E402


def cells(code, xt):
    if code == mf.SPHERE:
        lon = np.arctan2(xt[:, 1], xt[:, 0])
        a = np.clip(((lon + np.pi) / (2 * np.pi) * 64).astype(int), 0, 63)
        b = np.clip(((xt[:, 2] + 1) / 2 * 32).astype(int), 0, 31)
        return a * 32 + b
    a = np.clip((xt[:, 0] / (2 * np.pi) * 48).astype(int), 0, 47)
    b = np.clip((xt[:, 1] / (2 * np.pi) * 48).astype(int), 0, 47)
    return a * 48 + b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| dataset | t in [0, 0.5) | [0.5, 0.9) | [0.9, 1) |\n|---|---|---|---|")
    for name, (code, D, _, _) in mdata.DATASETS.items():
        row = []
        for lo, hi in ((0.0, 0.5), (0.5, 0.9), (0.9, 1.0)):
            x1 = mdata.sample(name, a.n, rng)
            x0 = mf.sample_prior(code, a.n, D, rng)
            t = rng.uniform(lo, hi, a.n)
            xt, ut = np.zeros((a.n, D)), np.zeros((a.n, D))
            mf.geodesic(code, x0, x1, t, xt, ut)
            key = cells(code, xt)
            count = np.bincount(key)
            explained = sum((np.bincount(key, ut[:, d]) ** 2 / np.maximum(count, 1)).sum()
                            for d in range(D)) / a.n
            row.append(f"{100 * explained / np.mean(np.sum(ut * ut, axis=1)):.1f}%")
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
