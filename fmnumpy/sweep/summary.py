"""A sweep's summary, remade from its run folders at any time (``fmnumpy sweep --summary
DIR``): DIR/summary.csv (a row per run: its grid options, its seed, its metrics),
DIR/summary.md (each configuration's metrics over seeds, mean, min and max, and the paired
ratio of the metric to the baseline configuration's on the same seed) and DIR/summary.png.
"""
import csv
import itertools
import json
import os

import numpy as np

from fmnumpy.errors import FmnumpyError

METRIC = "w2"        # the metric of the ratios and the plot, where the family reports it


def read_runs(out):
    """[(options.json, metrics.json or None)] of every run folder under DIR/runs."""
    root = os.path.join(out, "runs")
    if not os.path.isdir(root):
        raise FmnumpyError(f"{out} holds no sweep (no runs/ folder); pass the --out of a sweep")
    rows = []
    for key in sorted(os.listdir(root)):
        folder = os.path.join(root, key)
        try:
            with open(os.path.join(folder, "options.json")) as f:
                opts = json.load(f)
        except FileNotFoundError:
            continue
        metrics = None
        if os.path.exists(os.path.join(folder, "metrics.json")):
            with open(os.path.join(folder, "metrics.json")) as f:
                metrics = json.load(f)
        rows.append((dict(opts, key=key), metrics))
    return rows


def _label(config):
    return " ".join(f"{k}={v}" for k, v in config.items())


def summarize(out, plot=True):
    """Write summary.csv, summary.md (and summary.png) of the sweep in ``out``; returns the
    Markdown lines."""
    runs = read_runs(out)
    if not os.path.exists(os.path.join(out, "sweep.json")):
        raise FmnumpyError(f"{out} holds runs but no sweep.json; pass the --out of a sweep")
    with open(os.path.join(out, "sweep.json")) as f:
        sweep = json.load(f)
    axes = ({"config": list(sweep["configs"])} if sweep.get("configs") else {}) | sweep["grid"]
    grid_keys, baseline = list(axes), sweep["baseline"]
    ended = [(o, m) for o, m in runs if m is not None]
    names = sorted({k for _, m in ended for k, v in m.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run"] + grid_keys + ["seed"] + names)
        for o, m in sorted(ended, key=lambda r: ([str(r[0]["config"][k]) for k in grid_keys],
                                                 r[0]["seed"])):
            w.writerow([o["key"]] + [o["config"][k] for k in grid_keys] + [o["seed"]]
                       + [m.get(n, "") for n in names])
    by = {}
    for o, m in ended:
        by.setdefault(tuple(o["config"][k] for k in grid_keys), {})[o["seed"]] = m
    metric = METRIC if METRIC in names else (names[0] if names else None)
    lines = [f"# Sweep: {sweep['family']}", "",
             f"{len(ended)} of {len(runs)} runs ended; seeds {sweep['seeds']}; fixed "
             f"{sweep['fixed']}. Each cell: mean (min, max) over seeds. Ratio: {metric} over "
             f"the baseline's ({_label(baseline)}, the other grid options the same) on the "
             "same seed, mean (min, max).", ""]
    shown = [n for n in names if n not in ("steps",)]
    head = grid_keys + ["seeds"] + shown + [f"{metric} / baseline"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels, means, spans = [], [], []
    order = [tuple(v) for v in itertools.product(*axes.values())]
    for config in [c for c in order if c in by]:
        seeds = by[config]
        cells = list(config) + [len(seeds)]
        for n in shown:
            v = np.array([s[n] for s in seeds.values() if n in s], dtype=float)
            cells.append(f"{v.mean():.4g} ({v.min():.4g}, {v.max():.4g})" if v.size else "")
        partner = tuple(baseline.get(k, v) for k, v in zip(grid_keys, config))
        ratios = [m[metric] / by[partner][s][metric] for s, m in seeds.items()
                  if partner in by and s in by[partner] and metric in m]
        cells.append(f"{np.mean(ratios):.3f} ({min(ratios):.3f}, {max(ratios):.3f})"
                     if ratios else "")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        if metric:
            v = np.array([s[metric] for s in seeds.values() if metric in s], dtype=float)
            labels.append(_label(dict(zip(grid_keys, config))))
            means.append(v.mean())
            spans.append((v.min(), v.max()))
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if plot and labels:
        from fmnumpy.plots.euclidean import bar_chart
        bar_chart(os.path.join(out, "summary.png"), labels,
                  {"mean": means, "min": [a for a, _ in spans], "max": [b for _, b in spans]},
                  metric, f"sweep: {metric} of each configuration over seeds {sweep['seeds']}")
    return lines
