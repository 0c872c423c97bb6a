"""Transport between two distributions with the settings of Tong et al. 2024 (TMLR,
"Improving and generalizing flow-based generative models with minibatch optimal
transport"; ../bench/README.md (Workloads), "Transport and conditional workloads"):

    MLP 3 x 64 SELU, AdamW lr 1e-3 weight decay 1e-5 (constant, no warm-up, no
    clipping, no EMA), batch 512, 20,000 steps, uniform t, sigma 0.1,
    sampling with 100 Euler steps, W2 of 10,000 samples against 10,000 fresh points.

For each (source, target) and coupling (independent pairs = I-CFM, exact minibatch OT
= OT-CFM) and seed: the exact W2 of n = 10,000 samples against 10,000 fresh points, the
target's data floor at the same n (W2 between two independent draws, mean and sd over
``--floor-pairs`` pairs), ``FlowMatcher.evaluate`` on ``--eval-n`` points (W1, NPE,
straightness, ...; the NPE needs the exact W2 between source and data, which at 10,000
points of two distant distributions takes a minute per run), and the training time.  Writes JSON and a markdown table; ``--pictures DIR``
also draws the trajectories of the first seed of each (source, target, coupling).

    python bench/transport.py [--seeds 0 1 2] [--steps 20000] [--n 10000]
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy import FlowMatcher  # noqa: E402
from fmnumpy.euclidean import datasets
from fmnumpy.metrics import w2  # noqa: E402

TASKS = (("normal", "moons"), ("normal", "scurve"), ("8gaussians", "moons"))
COUPLINGS = ("independent", "ot")
PAPER = dict(hidden=(64, 64, 64), activation="selu", optimizer="adamw", lr=1e-3,
             weight_decay=1e-5, schedule="constant", warmup=0, clip=0.0, ema_decay=0.0,
             time_power=1.0, sigma=0.1)
BATCH, METHOD, SAMPLE_STEPS = 512, "euler", 100


def data_floor(name, n, pairs, seed=20_000):
    vals = [w2(datasets.sample(name, n, np.random.default_rng([seed, p, 0])),
               datasets.sample(name, n, np.random.default_rng([seed, p, 1])))
            for p in range(pairs)]
    return float(np.mean(vals)), float(np.std(vals))


def table(res):
    lines = ["| source -> target | coupling | W2 per seed (n = 10,000) | mean W2 | floor (sd) | "
             "ratio | NPE per seed | mean NPE | train s (mean) |", "|---" * 9 + "|"]
    for r in res["rows"]:
        floor = res["floors"][r["target"]]
        w = [s["w2"] for s in r["seeds"]]
        e = [s["npe"] for s in r["seeds"]]
        lines.append(
            f"| {r['source']} -> {r['target']} | {r['coupling']} | "
            f"{', '.join(f'{x:.3f}' for x in w)} | {np.mean(w):.4f} | {floor['mean']:.4f} "
            f"({floor['sd']:.4f}) | {np.mean(w) / floor['mean']:.2f} | "
            f"{', '.join(f'{x:.3f}' for x in e)} | {np.mean(e):.3f} | "
            f"{np.mean([s['train_seconds'] for s in r['seeds']]):.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--floor-pairs", type=int, default=20)
    ap.add_argument("--eval-n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pictures", default=None, help="folder for trajectory pictures")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "transport.json"))
    a = ap.parse_args(argv)
    res = dict(settings=dict(PAPER, batch=BATCH, steps=a.steps, method=METHOD,
                             sample_steps=SAMPLE_STEPS, n=a.n, floor_pairs=a.floor_pairs,
                             eval_n=a.eval_n, seeds=a.seeds),
               machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               started=time.strftime("%Y-%m-%d %H:%M:%S"), floors={}, rows=[])
    for target in sorted({t for _, t in TASKS}):
        m, sd = data_floor(target, a.n, a.floor_pairs)
        res["floors"][target] = dict(mean=m, sd=sd)
        print(f"floor {target}: {m:.4f} (sd {sd:.4f})", flush=True)
    for source, target in TASKS:
        for coupling in COUPLINGS:
            row = dict(source=source, target=target, coupling=coupling, seeds=[])
            for seed in a.seeds:
                fm = FlowMatcher(**PAPER, coupling=coupling, seed=seed, threads=a.threads)
                t0 = time.perf_counter()
                fm.fit(target, steps=a.steps, batch_size=BATCH,
                       source=None if source == "normal" else source)
                train_s = time.perf_counter() - t0
                x = fm.sample(a.n, method=METHOD, steps=SAMPLE_STEPS, seed=seed + 100)
                fresh = datasets.sample(target, a.n, np.random.default_rng([seed, 9, a.n]))
                m = fm.evaluate(n=a.eval_n, seed=seed, method=METHOD, steps=SAMPLE_STEPS)
                m["w2_eval_n"], m["w2"] = m["w2"], w2(x, fresh)
                row["seeds"].append(dict(seed=seed, train_seconds=train_s, **m))
                print(f"{source} -> {target} {coupling} seed {seed}: W2 {m['w2']:.4f}, "
                      f"NPE {m['npe']:.4f}, W1 {m['w1']:.4f} ({train_s:.0f} s)", flush=True)
                if a.pictures and seed == a.seeds[0]:
                    from fmnumpy.plots import euclidean as plots
                    os.makedirs(a.pictures, exist_ok=True)
                    _, traj = fm.sample(2000, method=METHOD, steps=SAMPLE_STEPS, seed=seed,
                                        record=50)
                    stem = f"transport_{source}_{target}_{coupling}"
                    ref = datasets.sample(target, 2000, np.random.default_rng([seed, 7]))
                    plots.trajectories(os.path.join(a.pictures, stem + ".png"), traj,
                                       data=ref)
                    plots.flow_gif(os.path.join(a.pictures, stem + ".gif"), traj, data=ref)
            res["rows"].append(row)
            with open(a.out, "w") as f:
                json.dump(res, f, indent=1)
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    md = os.path.splitext(a.out)[0] + ".md"
    with open(md, "w") as f:
        f.write(f"# Transport ({res['started']} - {res['finished']}, {res['machine']}, "
                f"{res['cpus']} CPUs)\n\n`python bench/transport.py` with "
                f"{json.dumps(res['settings'])}\n\n" + table(res) + "\n")
    print(table(res))
    print(f"wrote {a.out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
