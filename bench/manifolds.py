"""Flow matching on the sphere and the torus: train a ``ManifoldFlowMatcher`` for each
(dataset, configuration, seed), then the geodesic W2 of 2,000 samples against 2,000
fresh data points as a ratio to the data floor (the W2 between two fresh draws, mean
over 20 pairs), and KL(data || model) = E_data[log p_data - log p_model] estimated on
1,000 fresh points (exact data densities; the model's by the float32 reverse solve).  Every configuration and seed sees the same fresh data and the same
prior draw of the sampler (paired runs).

    python bench/manifolds.py [--datasets vmf ...] [--configs base features ...]
        [--seeds 0 1 2] [--steps 10000]
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy.manifold import datasets as mdata  # noqa: E402
from fmnumpy.manifold.estimator import ManifoldFlowMatcher  # noqa: E402
from fmnumpy.manifold.manifolds import NAMES  # noqa: E402

CONFIGS = {
    "base": dict(x_freqs=0, time_power=1.0),
    "features": dict(x_freqs=2, time_power=1.0),
    "features_t2": dict(x_freqs=2, time_power=2.0),
    "default": dict(),
    "ot": dict(coupling="ot"),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(mdata.DATASETS))
    ap.add_argument("--configs", nargs="+", default=["base", "features", "features_t2"],
                    choices=list(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="default: the CLI's")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "manifolds.json"))
    a = ap.parse_args(argv)
    from fmnumpy.cli.manifold import TRAIN_DEFAULTS
    steps = a.steps or TRAIN_DEFAULTS["steps"]
    batch = a.batch_size or TRAIN_DEFAULTS["batch_size"]
    res = dict(settings=dict(steps=steps, batch_size=batch, n=2000, floor_pairs=20,
                             logp_n=1000, configs={c: CONFIGS[c] for c in a.configs}),
               machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               started=time.strftime("%Y-%m-%d %H:%M:%S"), runs=[])
    for name in a.datasets:
        manifold = NAMES[mdata.manifold_of(name)]
        for seed in a.seeds:
            for config in a.configs:             # configurations alternate within a seed
                fm = ManifoldFlowMatcher(manifold, seed=seed, **CONFIGS[config])
                t0 = time.perf_counter()
                fm.fit(name, steps=steps, batch_size=batch)
                train_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                m = fm.evaluate(name, seed=0, logp_n=1000, dtype="float32")  # same fresh data
                m.update(config=config, seed=seed, train_seconds=train_s,
                         eval_seconds=time.perf_counter() - t0)
                res["runs"].append(m)
                print(f"{name:20s} {config:12s} seed {seed}: W2 {m['w2']:.4f} = "
                      f"{m['w2_ratio']:.3f}x floor {m['w2_floor']:.4f} (sd "
                      f"{m['w2_floor_sd']:.4f}); KL(data || model) {m['kl']:.3f} nats; "
                      f"train {train_s:.1f} s", flush=True)
                with open(a.out, "w") as f:
                    json.dump(res, f, indent=1)
    print(table(res))
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(table(res) + "\n")


def table(res):
    """Markdown: per dataset and configuration the W2 ratio (mean, min-max over seeds),
    the log-likelihood gap to the exact density and the training time."""
    s = res["settings"]
    lines = [f"Geodesic W2 of {s['n']} samples / data floor (mean of {s['floor_pairs']} "
             f"pairs), {s['steps']} steps of batch {s['batch_size']}; "
             f"{res['machine']}, {res['cpus']} CPUs, {res['started']}.", "",
             "| dataset | config | W2 / floor: mean (min - max) | floor (sd) | "
             "KL(data \\|\\| model), nats | train s |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], r["config"]) for r in res["runs"]},
                  key=lambda k: (list(mdata.DATASETS).index(k[0]), list(CONFIGS).index(k[1])))
    for name, config in keys:
        rs = [r for r in res["runs"] if r["dataset"] == name and r["config"] == config]
        ratio = np.array([r["w2_ratio"] for r in rs])
        gap = np.array([r["kl"] for r in rs])
        lines.append(f"| {name} | {config} | {ratio.mean():.3f} ({ratio.min():.3f} - "
                     f"{ratio.max():.3f}) | {rs[0]['w2_floor']:.4f} ({rs[0]['w2_floor_sd']:.4f})"
                     f" | {gap.mean():.3f} ({gap.min():.3f} - {gap.max():.3f}) | "
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f} |")
    lines.append(f"\n{len(res['runs'])} runs; seeds "
                 f"{sorted({r['seed'] for r in res['runs']})}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
