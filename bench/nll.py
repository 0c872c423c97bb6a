"""Mean negative log-likelihood of fresh data under a trained model (exact, by the
instantaneous change of variables; docs/likelihood.md).

    python bench/nll.py --checkpoint results/checkpoint.npz [-n 2000] [--seed 30000]

Draws n fresh points of the checkpoint's dataset from default_rng([seed]) and prints
the mean -log p with RK4 (100 steps) and with Dormand-Prince (rtol = atol = 1e-6,
its number of network evaluations), and the wall time of each.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy import FlowMatcher  # noqa: E402
from fmnumpy.euclidean import datasets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=30_000)
    a = ap.parse_args(argv)
    fm = FlowMatcher.load(a.checkpoint)
    x = datasets.sample(fm.data_, a.n, np.random.default_rng([a.seed]))
    for method, kw in (("rk4", dict(steps=100)), ("dopri5", dict(rtol=1e-6, atol=1e-6))):
        t = time.perf_counter()
        nll = -float(np.mean(fm.log_prob(x, method=method, **kw)))
        secs = time.perf_counter() - t
        nfe = getattr(fm.last_solve_, "nfe", None)
        print(f"{fm.data_}: mean NLL of {a.n} fresh points {nll:.4f} nats ({method} "
              f"{kw}, {nfe} evaluations, {secs:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
