"""Conditional models measured (docs/conditions.md):

1. The whole distribution of a labelled model: 8gaussians with its labels, sampled with
   no labels given, by the null class (marginal="null") or by labels drawn from the
   training data's own (marginal="data"), beside an unconditional model of the same data;
   exact W2 of 2,000 samples (RK4 100, prior draw of seed 1000 + s) against 2,000
   independent fresh points (rng [20000, s], unstratified), over the floor of two
   independent draws (20 pairs); seeds 0-2, paired.
2. Conditional OT against independent pairs for a posterior flow (two_moons, 10,000
   simulations): C2ST against sbibm's reference posteriors (bench/sbi_bench.py) and the
   straightness of the flow at each observation (metrics.straightness, 1,000 source
   points).

    python bench/conditions.py [--seeds 0 1 2] [--ot-seeds 0] [--out bench/results/conditions.md]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.sbi_bench import reference  # noqa: E402
from fmnumpy import FlowMatcher  # noqa: E402
from fmnumpy.euclidean import datasets  # noqa: E402
from fmnumpy.metrics import c2st, straightness, w2  # noqa: E402
from fmnumpy.sbi import PosteriorFlow, simulate  # noqa: E402

N, PAIRS = 2000, 20


def whole_distribution(seeds):
    name = "8gaussians"
    draw = lambda n, rng: datasets.sample(name, n, rng, stratified=False)   # noqa: E731
    floor = float(np.mean([w2(draw(N, np.random.default_rng([10_000, p, 0])),
                              draw(N, np.random.default_rng([10_000, p, 1])))
                           for p in range(PAIRS)]))
    rows = {"labelled, null class": [], "labelled, labels drawn from the data": [],
            "unconditional": []}
    secs = {"labelled": [], "unconditional": []}
    for s in seeds:
        fresh = draw(N, np.random.default_rng([20_000, s]))
        t = time.perf_counter()
        lab = FlowMatcher(seed=s).fit(name, labels=True)
        secs["labelled"].append(time.perf_counter() - t)
        t = time.perf_counter()
        plain = FlowMatcher(seed=s).fit(name)
        secs["unconditional"].append(time.perf_counter() - t)
        rows["labelled, null class"].append(
            w2(lab.sample(N, seed=1000 + s, marginal="null"), fresh) / floor)
        rows["labelled, labels drawn from the data"].append(
            w2(lab.sample(N, seed=1000 + s, marginal="data"), fresh) / floor)
        rows["unconditional"].append(w2(plain.sample(N, seed=1000 + s), fresh) / floor)
        print(s, {k: round(v[-1], 3) for k, v in rows.items()}, flush=True)
    lines = [f"## The whole distribution of a labelled model (8gaussians, seeds {seeds})", "",
             f"W2 / floor (floor {floor:.4f}: two independent {N}-point draws, mean of "
             f"{PAIRS} pairs); samples from the same prior draw per seed, against the same "
             "independent fresh data. Mean (min-max over seeds).", "",
             "| sampler | W2 / floor | per seed |", "|---|---|---|"]
    for k, v in rows.items():
        lines.append(f"| {k} | {np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f}) | "
                     + ", ".join(f"{x:.3f}" for x in v) + " |")
    lines += ["", f"Training: labelled {np.mean(secs['labelled']):.1f} s, unconditional "
              f"{np.mean(secs['unconditional']):.1f} s (mean; 20,000 steps)."]
    return lines


def conditional_ot(seeds, budget=10_000, beta=10.0):
    task = "two_moons"
    refs = [reference(task, k) for k in range(1, 11)]
    res = {}
    for coupling in ("independent", "exact_ot"):
        scores, straight, secs = [], [], []
        for s in seeds:
            theta, x = simulate(task, budget, seed=s)
            t = time.perf_counter()
            q = PosteriorFlow(task=task, seed=s, coupling=coupling, condition_beta=beta)
            q.fit_simulations(theta, x)
            secs.append(time.perf_counter() - t)
            for k, (xo, ref, _) in enumerate(refs):
                scores.append(c2st(ref, q.sample_posterior(xo, 10_000, seed=k)))
                z0 = np.random.default_rng([s, k, 60]).standard_normal((1000, 2))
                straight.append(straightness(
                    lambda xx, tt: q.velocity(xx, tt, condition=xo), z0, steps=100))
            print(coupling, s, np.mean(scores[-10:]).round(3),
                  np.mean(straight[-10:]).round(4), flush=True)
        res[coupling] = (scores, straight, secs)
    lines = [f"## Conditional OT against independent pairs ({task}, {budget:,} simulations, "
             f"seeds {seeds})", "",
             "C2ST of 10,000 posterior samples against sbibm's reference samples of the ten "
             "observations; straightness (metrics.straightness: 0 for straight lines) of the "
             "flow at each observation, 1,000 source points, Euler 100 steps. Mean (min-max "
             f"over seeds x observations). exact_ot: conditional OT, beta = {beta} on the "
             "standardized condition.", "",
             "| coupling | C2ST | straightness | train s |", "|---|---|---|---|"]
    for k, (sc, st, secs) in res.items():
        lines.append(f"| {k} | {np.mean(sc):.3f} ({min(sc):.3f}-{max(sc):.3f}) | "
                     f"{np.mean(st):.4f} ({min(st):.4f}-{max(st):.4f}) | {np.mean(secs):.1f} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parts", nargs="+", default=["whole", "ot"], choices=("whole", "ot"))
    ap.add_argument("--ot-seeds", type=int, nargs="+", default=None,
                    help="the seeds of the conditional-OT part (default: --seeds)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "conditions.md"))
    a = ap.parse_args(argv)
    ot = f" --ot-seeds {' '.join(map(str, a.ot_seeds))}" if a.ot_seeds else ""
    lines = ["# Conditional models", "", f"`python bench/conditions.py --seeds "
             f"{' '.join(map(str, a.seeds))} --parts {' '.join(a.parts)}{ot}`, "
             f"{time.strftime('%Y-%m-%d')}, on this 2-core machine.", ""]
    if "whole" in a.parts:
        lines += whole_distribution(a.seeds) + [""]
    if "ot" in a.parts:
        lines += conditional_ot(a.ot_seeds or a.seeds) + [""]
    text = "\n".join(lines)
    print(text)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
