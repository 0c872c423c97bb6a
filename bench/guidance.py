"""Classifier-free guidance on 8gaussians with its mode labels (bench/README.md, Workloads,
"8gaussians with its mode labels for conditional accuracy"): train with the README's
defaults and ``labels=True`` on each seed, then for each guidance weight w and class k
sample ``--n`` points with label k (RK4, 100 steps) and count the fraction whose nearest
mode centre is k's.  Also the exact W2 of each class's samples (w = 1) against fresh
points of that class (``FlowMatcher.evaluate``), and with ``--pictures DIR`` the
classes.png / guidance.png of the first seed.

    python bench/guidance.py [--seeds 0 1 2] [--steps 20000] [--n 500]
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy import DEFAULTS, FlowMatcher  # noqa: E402
from fmnumpy.euclidean import datasets

WEIGHTS = (0.0, 1.0, 2.0, 3.0, 4.0)
CENTRES = datasets.EIGHT_CENTRES / 1.414           # the modes, as 8gaussians scales them


def accuracy(fm, w, n, seed):
    """Fraction of class-k samples nearest to mode k, per class (8,)."""
    out = []
    for k in range(8):
        x = fm.sample(n, labels=k, guidance=w, seed=1000 * seed + k)
        near = np.argmin(((x[:, None, :] - CENTRES[None]) ** 2).sum(-1), axis=1)
        out.append(float(np.mean(near == k)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pictures", default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "guidance.json"))
    a = ap.parse_args(argv)
    res = dict(settings=dict(steps=a.steps, n_per_class=a.n, weights=WEIGHTS, seeds=a.seeds,
                             label_dropout=DEFAULTS["label_dropout"], method="rk4",
                             sample_steps=DEFAULTS["sample_steps"]),
               machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               started=time.strftime("%Y-%m-%d %H:%M:%S"), runs=[])
    for seed in a.seeds:
        fm = FlowMatcher(seed=seed, threads=a.threads)
        t0 = time.perf_counter()
        fm.fit("8gaussians", steps=a.steps, labels=True)
        run = dict(seed=seed, train_seconds=time.perf_counter() - t0,
                   accuracy={str(w): accuracy(fm, w, a.n, seed) for w in WEIGHTS},
                   w2_per_class=fm.evaluate(seed=seed)["w2_per_class"])
        res["runs"].append(run)
        print(f"seed {seed}: " + ", ".join(f"w={w:g} {np.mean(run['accuracy'][str(w)]):.4f}"
                                            for w in WEIGHTS), flush=True)
        if a.pictures and seed == a.seeds[0]:
            from fmnumpy.cli.main import _class_pictures
            os.makedirs(a.pictures, exist_ok=True)
            _class_pictures(fm, datasets.as_data("8gaussians", True), a.pictures, seed)
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    lines = ["| w | accuracy per seed (mean over the 8 classes) | mean | lowest class |",
             "|---|---|---|---|"]
    for w in WEIGHTS:
        per = [np.mean(r["accuracy"][str(w)]) for r in res["runs"]]
        low = min(min(r["accuracy"][str(w)]) for r in res["runs"])
        lines.append(f"| {w:g} | {', '.join(f'{p:.4f}' for p in per)} | {np.mean(per):.4f} "
                     f"| {low:.3f} |")
    md = os.path.splitext(a.out)[0] + ".md"
    with open(md, "w") as f:
        f.write(f"# Guidance on 8gaussians ({res['started']} - {res['finished']}, "
                f"{res['machine']}, {res['cpus']} CPUs)\n\n`python bench/guidance.py` with "
                f"{json.dumps(res['settings'])}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {a.out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
