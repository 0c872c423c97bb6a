"""One step instead of a hundred: flow maps (MeanFlow, shortcut) against the plain default.

For each set, seed and configuration (:data:`CONFIGS`, FlowMatcher's defaults plus the
options shown), one run trains with ``fit(set)`` (fit's steps: 20,000 for the plain model,
30,000 for a map, unless the configuration says; one thread; ``--workers`` runs at a time) and scores 2,000 samples against 2,000 independent fresh data points
(``default_rng([seed, 99])``, unstratified) by exact W2, divided by the floor (the W2
of two independent fresh draws, averaged over 20 pairs).  Every sampler of a run starts
from the same source points (seed + 1), and every configuration of a seed is scored on
the same fresh data: the comparisons are paired.

    plain runs:  RK4 100 (the default) and the W2-against-NFE grid (Euler, RK4, SDE)
    map runs:    1, 2, 4 and 8 jumps, and RK4 25 on the diagonal u(x, t, t)

    python bench/flowmap.py [--sets ...] [--seeds 0 1 2] [--configs plain meanflow shortcut]
                            [--workers 2] [--out bench/results/flowmap]
    python bench/flowmap.py --report-only [--out ...]        # the tables from OUT.jsonl
    python bench/flowmap.py --speed [--config meanflow]      # samples per second
    python bench/flowmap.py --pictures [--set 2spirals]      # from the runs' checkpoints

Each run is appended to ``OUT.jsonl`` as it ends (a rerun skips the runs found there),
its checkpoint to ``--ckpt-dir``; the tables go to ``OUT.md``, the W2-against-NFE plot
to ``--plot``.
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import markdown_table, w2_nfe_axes  # noqa: E402

SETS = ("2spirals", "8gaussians", "checkerboard", "moons", "pinwheel", "rings", "swissroll",
        "circles")                                   # FFJORD's eight 2-D sets
CONFIGS = {       # FlowMatcher's defaults and these options; steps: fit's default unless given
    "plain": {},
    "meanflow": dict(objective="meanflow"),                   # 30,000 steps (MAP_STEPS)
    "shortcut": dict(objective="shortcut"),
    "meanflow_20k": dict(objective="meanflow", steps=20000),
    "shortcut_20k": dict(objective="shortcut", steps=20000),
    "meanflow_paper": dict(objective="meanflow", map_teacher=False),
    # the options measured at 20,000 steps before the defaults were chosen
    # (bench/results/flowmap_options.md): MeanFlow with the conditional velocity x1 - x0
    # (map_teacher=False), then with the EMA teacher's velocity (map_teacher=True)
    "meanflow_p0": dict(objective="meanflow", map_teacher=False, adaptive_power=0.0,
                        steps=20000),
    "meanflow_p1": dict(objective="meanflow", map_teacher=False, adaptive_power=1.0,
                        steps=20000),
    "meanflow_f50": dict(objective="meanflow", map_teacher=False, map_fraction=0.5,
                         steps=20000),
    "meanflow_40k": dict(objective="meanflow", map_teacher=False, steps=40000),
    "meanflow_teacher": dict(objective="meanflow", map_teacher=True, steps=20000),
    "meanflow_teacher_f50": dict(objective="meanflow", map_teacher=True, map_fraction=0.5,
                                 steps=20000),
    "meanflow_teacher_f50_u": dict(objective="meanflow", map_teacher=True, map_fraction=0.5,
                                   map_time_power=1.0, steps=20000),
    "meanflow_teacher_f75": dict(objective="meanflow", map_teacher=True, map_fraction=0.75,
                                 steps=20000),
    "shortcut_f50": dict(objective="shortcut", map_fraction=0.5, steps=20000),
}
JUMPS = (1, 2, 4, 8)
GRID = ([(f"euler {k}", "euler", k, None, k) for k in (4, 10, 25, 100)]
        + [(f"rk4 {k}", "rk4", k, None, 4 * k) for k in (1, 2, 3, 6, 25)]
        + [(f"sde g=1 {k}", "sde", k, 1.0, k) for k in (10, 25, 100)])
N, PAIRS = 2000, 20


def floor(name):
    from fmnumpy.euclidean import datasets
    from fmnumpy.metrics import w2
    rng = np.random.default_rng([7, 25])
    vals = [w2(datasets.sample(name, N, rng, stratified=False),
               datasets.sample(name, N, rng, stratified=False)) for _ in range(PAIRS)]
    return float(np.mean(vals)), float(np.std(vals, ddof=1))


def one_run(name, config, seed, ckpt_dir):
    """Train one configuration on one set and seed; the W2 of each of its samplers."""
    from fmnumpy import FlowMatcher
    from fmnumpy.euclidean import datasets
    from fmnumpy.metrics import w2
    opts = dict(CONFIGS[config])
    steps = opts.pop("steps", None)
    fm = FlowMatcher(seed=seed, threads=1, **opts)
    t0 = time.perf_counter()
    fm.fit(name, steps=steps)
    train_s = time.perf_counter() - t0
    if ckpt_dir:
        os.makedirs(ckpt_dir, exist_ok=True)
        fm.save(os.path.join(ckpt_dir, f"{name}_{config}_{seed}.npz"))
    fresh = datasets.sample(name, N, np.random.default_rng([seed, 99]), stratified=False)
    x0 = fm.draw_source(N, np.random.default_rng(seed + 1))
    out = {}
    if fm.objective == "fm":
        out["rk4 100"] = w2(fm.sample(x0=x0, method="rk4", steps=100), fresh)
        for label, method, steps, noise, _ in GRID:
            kw = {} if noise is None else dict(noise=noise, seed=seed + 1)
            out[label] = w2(fm.sample(x0=x0, method=method, steps=steps, **kw), fresh)
    else:
        for k in JUMPS:
            out[f"jump {k}"] = w2(fm.sample(x0=x0, method="jump", steps=k), fresh)
        out["rk4 25"] = w2(fm.sample(x0=x0, method="rk4", steps=25), fresh)
    return dict(set=name, config=config, seed=seed, train_s=train_s, w2=out)


def report(runs, sets, configs, seeds, floors, command):
    """The Markdown tables: W2 / floor of each sampler (mean +- sd over seeds), the paired
    ratio of each map sampler's W2 to the plain default's RK4 100 (mean and worst seed),
    the training time against the plain run of the same seed."""
    by = {(r["set"], r["config"], r["seed"]): r for r in runs}
    lines = ["# Flow maps against the plain default", "", f"`{command}`", "",
             f"W2 / floor of {N} samples against {N} independent fresh points, mean +- sd over "
             f"seeds {seeds}; floor: W2 of two independent fresh draws, {PAIRS} pairs. "
             "Every sampler of a seed starts from the same source points and is scored on "
             "the same fresh data (paired). Ratio: W2 of the map's samples over the plain "
             "default's RK4 100 on the same seed, mean and worst (max) over seeds. Training: "
             "seconds against the plain run of the same seed (one thread each, "
             "the runs two at a time).", ""]
    maps = [c for c in configs if c != "plain"]

    def cell(v):
        return f"{np.mean(v):.3f} +- {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
    head = ["set", "configuration", "seeds", "RK4 100", "1 jump", "2 jumps", "4 jumps",
            "1 jump / plain", "2 jumps / plain", "training / plain"]
    rows = []
    for s in sets:
        fl = floors[s][0]
        plain = [by[s, "plain", k]["w2"]["rk4 100"] / fl for k in seeds if (s, "plain", k) in by]
        if plain:
            rows.append([s, f"plain (floor {fl:.4f})", len(plain), cell(plain)] + [""] * 6)
        for c in maps:
            got = [k for k in seeds if (s, c, k) in by and (s, "plain", k) in by]
            if not got:
                continue
            row = [s, c, len(got), ""]
            for j in (1, 2, 4):
                row.append(cell([by[s, c, k]["w2"][f"jump {j}"] / fl for k in got]))
            for j in (1, 2):
                r = [by[s, c, k]["w2"][f"jump {j}"] / by[s, "plain", k]["w2"]["rk4 100"]
                     for k in got]
                row.append(f"{np.mean(r):.3f} (max {np.max(r):.3f})")
            t = [by[s, c, k]["train_s"] / by[s, "plain", k]["train_s"] for k in got]
            row.append(f"{np.mean(t):.2f}x")
            rows.append(row)
    lines.append(markdown_table(head, rows))
    # the NFE grid: plain samplers and every map's jumps, W2 / floor averaged over seeds
    lines += ["", "## W2 / floor against network evaluations (NFE) per sample", ""]
    cols = ([(lbl, "plain", lbl, nfe) for lbl, _, _, _, nfe in GRID]
            + [("rk4 100", "plain", "rk4 100", 400)]
            + [(f"{c} jump {k}", c, f"jump {k}", k) for c in maps for k in JUMPS])
    grid_rows = []
    for lbl, c, key, nfe in cols:
        vals = []
        for s in sets:
            v = [by[s, c, k]["w2"][key] / floors[s][0] for k in seeds if (s, c, k) in by]
            vals.append(f"{np.mean(v):.3f}" if v else "-")
        grid_rows.append([lbl, nfe] + vals)
    lines.append(markdown_table(["sampler", "NFE"] + list(sets), grid_rows))
    return lines


def nfe_plot(path, runs, sets, maps, seeds, floors):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by = {(r["set"], r["config"], r["seed"]): r for r in runs}
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4), squeeze=False)
    for ax, s in zip(axes[0], sets):
        def mean(c, key):
            v = [by[s, c, k]["w2"][key] / floors[s][0] for k in seeds if (s, c, k) in by]
            return np.mean(v) if v else np.nan
        for fam in ("euler", "rk4", "sde g=1"):
            pts = [(nfe, mean("plain", lbl)) for lbl, _, _, _, nfe in GRID
                   if lbl.rsplit(" ", 1)[0] == fam]
            ax.plot(*zip(*pts), marker="o", label=f"plain, {fam}")
        for c in maps:
            ax.plot(JUMPS, [mean(c, f"jump {k}") for k in JUMPS], marker="s", lw=2,
                    label=f"{c} jumps")
        w2_nfe_axes(ax, s)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def speed(config, reps, n):
    """Seconds to sample n points by the plain default's RK4 100 and RK4 3, and by K jumps of
    ``config``'s map, alternated ``reps`` times on one thread; both trained briefly (speed
    does not depend on the weights).  Returns {sampler: [seconds per repetition]}."""
    from fmnumpy import FlowMatcher
    plain = FlowMatcher(threads=1).fit("2spirals", steps=200)
    opts = {k: v for k, v in CONFIGS[config].items() if k != "steps"}
    fmap = FlowMatcher(threads=1, **opts).fit("2spirals", steps=200)
    x0 = plain.draw_source(n, np.random.default_rng(1))
    runs = {"plain RK4 100": lambda: plain.sample(x0=x0, method="rk4", steps=100),
            "plain RK4 3": lambda: plain.sample(x0=x0, method="rk4", steps=3)}
    for k in (1, 2, 4):
        runs[f"{config} {k} jump{'s' if k > 1 else ''}"] = \
            lambda k=k: fmap.sample(x0=x0, method="jump", steps=k)
    for f in runs.values():                                       # compile, warm up
        f()
        f()
    times = {name: [] for name in runs}
    for _ in range(reps):
        for name, f in runs.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return times


def pictures(ckpt_dir, name, maps, seed=0, n=2000):
    """docs/images/flowmap_jumps.png: the same source points after 1, 2 and 4 jumps of each
    map beside the plain default's RK4 100, over fresh data, with each panel's W2;
    docs/images/flowmap_jumps.gif: the jumps of the first map, drawn along their lines."""
    from fmnumpy import FlowMatcher
    from fmnumpy.euclidean import datasets
    from fmnumpy.euclidean.flowmap import jump_frames
    from fmnumpy.metrics import w2
    from fmnumpy.plots import euclidean as plots
    load = lambda c: FlowMatcher.load(os.path.join(ckpt_dir, f"{name}_{c}_{seed}.npz"))  # noqa
    plain = load("plain")
    fresh = datasets.sample(name, n, np.random.default_rng([seed, 99]), stratified=False)
    x0 = plain.draw_source(n, np.random.default_rng(seed + 1))
    ref = plain.sample(x0=x0, method="rk4", steps=100)
    xs, titles = [], []
    for c in maps:
        fm = load(c)
        for k in (1, 2, 4):
            x = fm.sample(x0=x0, method="jump", steps=k)
            xs.append(x)
            titles.append(f"{c}, {k} jump{'s' if k > 1 else ''}\n{k} NFE, W2 {w2(x, fresh):.3f}")
        xs.append(ref)
        titles.append(f"plain, RK4 100\n400 NFE, W2 {w2(ref, fresh):.3f}")
    plots.classes("docs/images/flowmap_jumps.png", xs, data=[fresh] * len(xs), titles=titles,
                  title=f"{name}: the same source points, seed {seed}")
    _, traj = load(maps[0]).sample(x0=x0[:1000], method="jump", steps=4, record=True)
    plots.flow_gif("docs/images/flowmap_jumps.gif", jump_frames(traj), data=fresh)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=["plain", "meanflow", "shortcut"],
                    choices=list(CONFIGS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="bench/results/flowmap")
    ap.add_argument("--ckpt-dir", default="results/flowmap_runs")
    ap.add_argument("--plot", default="docs/images/flowmap_w2_nfe.png")
    ap.add_argument("--plot-configs", nargs="+", default=["meanflow", "shortcut"],
                    help="the maps drawn in the plot")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--pictures", action="store_true")
    ap.add_argument("--set", default="2spirals")
    ap.add_argument("--config", default="meanflow", choices=list(CONFIGS))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--n", type=int, default=10000)
    a = ap.parse_args(argv)
    command = "python bench/flowmap.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.pictures:
        pictures(a.ckpt_dir, a.set, [c for c in a.configs if c != "plain"])
        return
    if a.speed:
        times = speed(a.config, a.reps, a.n)
        base = np.array(times["plain RK4 100"])
        rows = [[name, f"{np.median(t):.5f}", f"{a.n / np.median(t):,.0f}",
                 "{:.0f}x ({:.0f}x, {:.0f}x)".format(*(lambda r: (np.median(r), r.min(),
                                                                  r.max()))(base / np.array(t)))]
                for name, t in times.items()]
        lines = ["# Samples per second: jumps of a flow map against the plain default", "",
                 f"`{command}`: {a.n} samples of 2spirals on one thread; each sampler run "
                 f"{a.reps} times, the samplers alternated in one process. Speed-up: the time "
                 "of the plain default's RK4 100 (400 network evaluations) over the "
                 "sampler's, per repetition (median, min, max).", "",
                 markdown_table(["sampler", "median s", "samples / s", "speed-up vs RK4 100"],
                                rows)]
        with open(a.out + "_speed.md", "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    log = a.out + ".jsonl"
    runs = []
    if os.path.exists(log):
        with open(log) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    done = {(r["set"], r["config"], r["seed"]) for r in runs}
    todo = [(s, c, k) for k in a.seeds for s in a.sets for c in a.configs
            if (s, c, k) not in done]
    if todo and not a.report_only:
        with ProcessPoolExecutor(a.workers) as pool, open(log, "a") as f:
            futs = {pool.submit(one_run, s, c, k, a.ckpt_dir): (s, c, k) for s, c, k in todo}
            for fut in as_completed(futs):
                r = fut.result()
                runs.append(r)
                f.write(json.dumps(r) + "\n")
                f.flush()
                print(r["set"], r["config"], r["seed"], f"{r['train_s']:.0f}s",
                      {k: round(v, 3) for k, v in r["w2"].items() if "jump" in k or k == "rk4 100"},
                      flush=True)
    sets = [s for s in a.sets if any(r["set"] == s for r in runs)]
    floors = {s: floor(s) for s in sets}
    lines = report(runs, sets, a.configs, a.seeds, floors, command)
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if a.plot and "plain" in a.configs:
        nfe_plot(a.plot, runs, sets[:3], [c for c in a.plot_configs if c in a.configs], a.seeds,
                 floors)


if __name__ == "__main__":
    main()
