"""Density estimation on the earth's event catalogues (S^2), the protocol of Riemannian
flow matching's Table 2: five random 80/10/10 splits, test negative log-likelihood in
nats with respect to area on the unit sphere (the uniform density scores log 4 pi =
2.531), mean and sd over the splits, beside the published rows.

    python bench/earth.py [--sets volerup quakes_all flood fire] [--split-seeds 0 1 2 3 4]
                          [--steps 10000] [--workers 2] [--data-dir ../shared/data/earth]
                          [--json PATH] [--out bench/results/earth]

The catalogues are read from ``--data-dir`` (never copied into the repository).  Each
run trains ``ManifoldFlowMatcher("sphere")`` in each configuration on the split's training
events (threads=1, ``--workers`` runs at a time), then scores the training events (at
most 1,000), the validation and the test events by the exact likelihood (RK4,
``--logp-steps`` steps, the network in ``--dtype``, the state in float64).  The solver's own error is shown on split 0 of each
set: the test NLL again with twice the steps.  A density map of each set (split 0:
Mollweide, log-density, the test events on top) is written beside the table.
``--configs`` names the configurations to run (:data:`CONFIGS`; "earth" is the
preset ``fmnumpy.manifold.presets`` keeps); ``bench/earth_select.py`` chooses among
them on the validation splits only.  Every run is appended to ``OUT.jsonl`` as it ends.
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import markdown_table  # noqa: E402
from fmnumpy.manifold.presets import PRESETS  # noqa: E402

SETS = ("volerup", "quakes_all", "flood", "fire")
TITLES = {"volerup": "Volcano", "quakes_all": "Earthquake", "flood": "Flood", "fire": "Fire"}
# Chen & Lipman, ICLR 2024, Table 2 (../shared/data/earth/README.md): mean, sd
PUBLISHED = {
    "Mixture of Kent": ((-0.80, 0.47), (0.33, 0.05), (0.73, 0.07), (1.18, 0.06)),
    "Riemannian CNF": ((-6.05, 0.61), (0.14, 0.23), (1.11, 0.19), (-0.80, 0.54)),
    "Moser Flow": ((-4.21, 0.17), (-0.16, 0.06), (0.57, 0.10), (-1.28, 0.05)),
    "Riemannian score-based": ((-4.92, 0.25), (-0.19, 0.07), (0.48, 0.09), (-1.33, 0.06)),
    "Riemannian flow matching": ((-7.93, 1.67), (-0.28, 0.08), (0.42, 0.05), (-1.86, 0.11)),
}
# the configurations compared on the validation splits (bench/results/earth_select.md);
# "steps" is the training length, everything else goes to ManifoldFlowMatcher
CONFIGS = {
    "default": {},
    "xf4": {"x_freqs": 4},
    "xf5": {"x_freqs": 5},
    "xf6": {"x_freqs": 6},
    "tp1": {"time_power": 1.0},
    "tp4": {"time_power": 4.0},
    "xf4_30k": {"x_freqs": 4, "steps": 30000},
    "xf6_30k": {"x_freqs": 6, "steps": 30000},
    "xf4_90k": {"x_freqs": 4, "steps": 90000},
    "xf4_w512": {"x_freqs": 4, "hidden": (512, 512, 512)},
    "xf4_d5": {"x_freqs": 4, "hidden": (256,) * 5},
    "earth": PRESETS["earth"],            # the preset these comparisons chose
}


def split(x, seed):
    """(train, validation, test) rows of x: a random 80/10/10 split drawn by ``seed``."""
    perm = np.random.default_rng([seed, 27]).permutation(x.shape[0])
    a, b = int(0.8 * x.shape[0]), int(0.9 * x.shape[0])
    return x[perm[:a]], x[perm[a:b]], x[perm[b:]]


def one_run(job):
    name, config, seed, a = job
    from fmnumpy import ManifoldFlowMatcher
    from fmnumpy.manifold import datasets as mdata
    x = mdata.latlon_to_sphere(*mdata.read_latlon(os.path.join(a["data_dir"], name + ".csv")))
    train, val, test = split(x, seed)
    kw = dict(CONFIGS[config])
    steps = kw.pop("steps", a["steps"])
    fm = ManifoldFlowMatcher("sphere", seed=seed, threads=1, **kw)
    t0 = time.perf_counter()
    fm.fit(train, steps=steps)
    seconds = time.perf_counter() - t0
    nll = lambda pts, steps=a["logp_steps"]: float(-fm.log_prob(pts, steps=steps,
                                                                 dtype=a["dtype"]).mean())
    out = dict(set=name, config=config, seed=seed, train_seconds=seconds, n=x.shape[0],
               train_nll=nll(train[:1000]), val_nll=nll(val), test_nll=nll(test))
    if seed == a["split_seeds"][0] and not a["no_maps"]:
        out["test_nll_2x_steps"] = nll(test, 2 * a["logp_steps"])
        from fmnumpy.plots import manifold as mplots
        grid = fm.density_grid(n_grid=60, steps=100)          # a picture: RK4 100 steps
        mplots.density_map(f"{a['out']}_{name}_{config}.png", "sphere", grid, log_scale=True,
                           points=test)
    return out


def table(records, sets):
    rows = [[f"{method} (published)"] + [f"{rows[SETS.index(s)][0]:.2f} +- "
                                         f"{rows[SETS.index(s)][1]:.2f}" for s in sets]
            for method, rows in PUBLISHED.items()]
    for config in dict.fromkeys(r["config"] for r in records):
        cells = []
        for s in sets:
            mine = [r for r in records if r["set"] == s and r["config"] == config]
            t = np.array([r["test_nll"] for r in mine])
            sec = np.mean([r["train_seconds"] for r in mine]) if mine else 0
            cells.append(f"**{t.mean():.2f} +- {t.std(ddof=1) if t.size > 1 else 0:.2f}** "
                         f"({sec:.0f} s)" if mine else "")
        rows.append([f"fmnumpy, {config}"] + cells)
    return markdown_table(["method"] + [TITLES[s] for s in sets], rows)


def details(records):
    return markdown_table(
        ["set", "split", "train NLL", "validation NLL", "test NLL", "test NLL, 2x steps",
         "train s"],
        [[f"{r['set']} ({r['config']})", r["seed"], f"{r['train_nll']:.3f}",
          f"{r['val_nll']:.3f}", f"{r['test_nll']:.4f}",
          f"{r['test_nll_2x_steps']:.4f}" if "test_nll_2x_steps" in r else "",
          f"{r['train_seconds']:.1f}"] for r in records])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--configs", nargs="+", default=["default"],
                    help="configurations of CONFIGS, each on every set, or SET:CONFIG on "
                    f"one set ({', '.join(CONFIGS)})")
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--logp-steps", type=int, default=100)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                    help="the likelihood network's passes (default float32, as log_prob's; "
                    "its state is float64 either way)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                        "shared", "data", "earth"))
    ap.add_argument("--no-maps", action="store_true", help="skip the solver check and maps")
    ap.add_argument("--json", default=None, help="each set's per-split test NLL")
    ap.add_argument("--out", default="bench/results/earth")
    a = ap.parse_args(argv)
    opts = dict(data_dir=a.data_dir, steps=a.steps, logp_steps=a.logp_steps, out=a.out,
                dtype=a.dtype, no_maps=a.no_maps, split_seeds=a.split_seeds)
    wanted = [c.split(":") if ":" in c else (None, c) for c in a.configs]
    for only, c in wanted:
        if c not in CONFIGS or only not in (None,) + SETS:
            ap.error(f"unknown configuration {only + ':' if only else ''}{c}")
    jobs = [(s, c, seed, opts) for s in a.sets for only, c in wanted if only in (None, s)
            for seed in a.split_seeds]
    configs = list(dict.fromkeys(c for _, c in wanted))
    records = []
    with ProcessPoolExecutor(a.workers) as pool, open(a.out + ".jsonl", "a") as log:
        for fut in as_completed([pool.submit(one_run, job) for job in jobs]):
            records.append(fut.result())
            print(json.dumps(records[-1]), flush=True)
            log.write(json.dumps(records[-1]) + "\n")
            log.flush()
    order = {(s, c, seed): i for i, (s, c, seed, _) in enumerate(jobs)}
    records.sort(key=lambda r: order[r["set"], r["config"], r["seed"]])
    if a.json:
        with open(a.json, "w") as f:
            json.dump({s: {c: [r["test_nll"] for r in records if r["set"] == s and
                                   r["config"] == c] for c in configs
                           if any(r["set"] == s and r["config"] == c for r in records)}
                       for s in a.sets}, f, indent=1)
    with open(a.out + ".json", "w") as f:
        json.dump(dict(records=records, argv=sys.argv), f, indent=1)
    md = (f"# The earth event catalogues on S^2\n\nTest NLL in nats w.r.t. area on the unit "
          f"sphere, mean +- sd over {len(a.split_seeds)} random 80/10/10 splits "
          f"(uniform: 2.531). `python bench/earth.py {' '.join(sys.argv[1:])}`; "
          f"ManifoldFlowMatcher('sphere') with "
          + "; ".join(f"{c}: {CONFIGS[c] or 'its defaults'}" for c in configs)
          + f" (steps {a.steps} unless given); the likelihood exact, RK4 {a.logp_steps} "
          f"steps, the network's passes in {a.dtype}. Beside each of fmnumpy's cells, the "
          "mean training time of a run (one thread).\n\n" + table(records, a.sets)
          + "\n\nEach run (train NLL on at most 1,000 training events; the last column the "
            "training time on one thread):\n\n" + details(records) + "\n")
    if not a.no_maps:
        md += ("\nDensity maps (split 0, log-density, the test events in white): "
               + ", ".join(f"[{s}, {c}]({os.path.basename(a.out)}_{s}_{c}.png)"
                           for s, c, seed, _ in jobs if seed == a.split_seeds[0]) + ".\n")
    with open(a.out + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
