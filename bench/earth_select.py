"""Model selection for the earth catalogues on the validation splits only: reads the
runs of ``bench/earth.py`` (its ``.jsonl`` logs), and for each set lists every
configuration's validation NLL (mean +- sd over the splits, and its paired difference
from the defaults on the same splits), picks the one with the lowest mean validation
NLL, and shows the test NLL of each beside it (read, not used to choose).  A run found
in several files is taken from the last.  A reference row: a von Mises-Fisher kernel
density at the training events, its concentration kappa chosen on the validation
splits of every split seed found.

    python bench/earth_select.py RUNS.jsonl [RUNS.jsonl ...] [--out bench/results/earth_select.md]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import markdown_table  # noqa: E402
from bench.earth import SETS, TITLES, split  # noqa: E402

KAPPAS = np.logspace(1, 6, 26)


def vmf_kde_nll(train, pts, kappa):
    """Mean NLL (nats, w.r.t. area) of pts under (1/n) sum_j vMF(x; x_j, kappa) with
    log C(kappa) = log kappa - log 4 pi - log sinh kappa."""
    log_sinh = kappa + np.log1p(-np.exp(-2.0 * kappa)) - np.log(2.0)
    logc = np.log(kappa) - np.log(4.0 * np.pi) - log_sinh
    z = kappa * (pts @ train.T - 1.0)                      # kappa (x . x_j - 1) <= 0
    m = z.max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(z - m).sum(axis=1)) + kappa - np.log(train.shape[0]))
    return float(-(logc + lse).mean())


def kde_rows(data_dir, sets, seeds):
    from fmnumpy.manifold import datasets as mdata
    out = {}
    for name in sets:
        x = mdata.latlon_to_sphere(*mdata.read_latlon(os.path.join(data_dir, name + ".csv")))
        parts = [split(x, seed) for seed in seeds]
        val = np.array([[vmf_kde_nll(tr, va, k) for k in KAPPAS] for tr, va, _ in parts])
        k = KAPPAS[int(np.argmin(val.mean(axis=0)))]
        test = np.array([vmf_kde_nll(tr, te, k) for tr, _, te in parts])
        out[name] = (k, val.mean(axis=0).min(), test)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="bench/results/earth_select.md")
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                        "shared", "data", "earth"))
    a = ap.parse_args(argv)
    recs = {}
    for path in a.runs:
        for line in open(path):
            r = json.loads(line)
            recs[r["set"], r["config"], r["seed"]] = r
    sets = [s for s in SETS if any(k[0] == s for k in recs)]
    lines = ["# Choosing the model for the earth catalogues on validation", "",
             f"`python bench/earth_select.py {' '.join(sys.argv[1:])}` over the runs of "
             "bench/earth.py. Validation NLL in nats (mean +- sd over the splits); "
             "'paired' is the mean +- sd of (config - default) on the same splits; the "
             "test NLL is read only, never used to choose. The runs of several files were "
             "scored with the likelihood steps of their own command (bench/earth.py "
             "--logp-steps: 100 for the 10,000-step comparisons, 200 for the preset, 800 for "
             "volcano's x_freqs 6), and timed with other runs beside them: compare their "
             "seconds only roughly.", ""]
    chosen = {}
    for s in sets:
        configs = list(dict.fromkeys(k[1] for k in recs if k[0] == s))
        seeds = sorted({k[2] for k in recs if k[0] == s and k[1] == "default"})
        lines += [f"## {TITLES[s]} ({s}), splits {', '.join(map(str, seeds))}", ""]
        rows, best = [], None
        for c in configs:
            rs = [recs.get((s, c, seed)) for seed in seeds]
            if any(r is None for r in rs):
                continue
            v = np.array([r["val_nll"] for r in rs])
            d = v - np.array([recs[s, "default", seed]["val_nll"] for seed in seeds])
            te = np.array([r["test_nll"] for r in rs])
            tr = np.array([r["train_nll"] for r in rs])
            sec = np.mean([r["train_seconds"] for r in rs])
            rows.append([c, f"{v.mean():.3f} +- {v.std(ddof=1):.3f}",
                         f"{d.mean():+.3f} +- {d.std(ddof=1):.3f}", f"{tr.mean():.3f}",
                         f"{te.mean():.3f} +- {te.std(ddof=1):.3f}", f"{sec:.0f}"])
            if best is None or v.mean() < best[1]:
                best = (c, v.mean())
        chosen[s] = best[0]
        lines += [markdown_table(["config", "validation NLL", "paired vs default",
                                  "train NLL", "test NLL", "train s"], rows),
                  "", f"Chosen on validation: **{best[0]}**.", ""]
    seeds = sorted({k[2] for k in recs})
    kde = kde_rows(a.data_dir, sets, seeds)
    lines += ["## Reference: a vMF kernel density at the training events", "",
              f"kappa chosen on the mean validation NLL over the splits {seeds} "
              f"(grid 10^1 .. 10^6, {len(KAPPAS)} values).", "",
              markdown_table(["set", "kappa", "validation NLL", "test NLL"],
                             [[TITLES[s], f"{k:.3g}", f"{v:.3f}",
                               f"{te.mean():.3f} +- {te.std(ddof=1):.3f}"]
                              for s, (k, v, te) in kde.items()])]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(chosen))


if __name__ == "__main__":
    main()
