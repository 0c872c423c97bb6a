"""Discrete flow matching on 2D token pmfs: train a ``DiscreteFlowMatcher`` for each
(dataset, source, seed), then the total variation between coarse histograms (16 x 16
bins) of 20,000 samples and 20,000 fresh data points as a ratio to the data-data
floor (mean over 20 pairs), and the mean ELBO of 2,000 fresh points against their
exact mean log p.  Every seed sees the same fresh data (paired runs).

    python bench/discrete.py [--datasets discrete_checkerboard discrete_8gaussians]
        [--sources mask uniform] [--seeds 0 1 2] [--steps 5000] [--hidden 256 256 256]
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy.discrete.estimator import DiscreteFlowMatcher  # noqa: E402

DEFAULT = DiscreteFlowMatcher()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+",
                    default=["discrete_checkerboard", "discrete_8gaussians"])
    ap.add_argument("--sources", nargs="+", default=["mask", "uniform"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--vocab", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="default: the CLI's")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--hidden", type=int, nargs="+", default=list(DEFAULT.hidden))
    ap.add_argument("--power", type=float, default=DEFAULT.power)
    ap.add_argument("--lr", type=float, default=DEFAULT.lr)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "discrete.json"))
    a = ap.parse_args(argv)
    from fmnumpy.cli.discrete import TRAIN_DEFAULTS
    steps = a.steps or TRAIN_DEFAULTS["steps"]
    batch = a.batch_size or TRAIN_DEFAULTS["batch_size"]
    res = dict(settings=dict(vocab=a.vocab, steps=steps, batch_size=batch, hidden=a.hidden,
                             power=a.power, lr=a.lr, n=20000, bins=16, floor_pairs=20,
                             elbo_n=2000),
               machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               started=time.strftime("%Y-%m-%d %H:%M:%S"), runs=[])
    for name in a.datasets:
        for source in a.sources:
            for seed in a.seeds:
                fm = DiscreteFlowMatcher(vocab_size=a.vocab, source=source,
                                         hidden=tuple(a.hidden), power=a.power, lr=a.lr,
                                         seed=seed)
                t0 = time.perf_counter()
                fm.fit(name, steps=steps, batch_size=batch)
                train_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                m = fm.evaluate(seed=0)                   # the same fresh data every seed
                m.update(dataset=name, source=source, seed=seed, train_seconds=train_s,
                         eval_seconds=time.perf_counter() - t0)
                res["runs"].append(m)
                print(f"{name} {source} seed {seed}: TV {m['tv']:.4f} = "
                      f"{m['tv_ratio']:.3f}x floor {m['tv_floor']:.4f}, ELBO "
                      f"{m['elbo']:.3f} vs log p {m['logp']:.3f} (gap {m['elbo_gap']:.3f}), "
                      f"train {train_s:.1f} s", flush=True)
                os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
                with open(a.out, "w") as f:
                    json.dump(res, f, indent=1)
    print(table(res))


def table(res):
    """A markdown table: per (dataset, source) the mean and range over seeds."""
    rows = ["| data | source | TV / floor (mean, range) | ELBO - log p, nats (mean, range) "
            "| train s |", "|---|---|---|---|---|"]
    keys = []
    for r in res["runs"]:
        if (r["dataset"], r["source"]) not in keys:
            keys.append((r["dataset"], r["source"]))
    for d, s in keys:
        rs = [r for r in res["runs"] if (r["dataset"], r["source"]) == (d, s)]
        q = np.array([r["tv_ratio"] for r in rs])
        g = -np.array([r["elbo_gap"] for r in rs])
        ts = np.mean([r["train_seconds"] for r in rs])
        rows.append(f"| {d} | {s} | {q.mean():.3f} ({q.min():.3f}-{q.max():.3f}) | "
                    f"{g.mean():.3f} ({g.min():.3f} to {g.max():.3f}) | {ts:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
