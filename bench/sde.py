"""Where stochastic sampling helps and where it does not: W2 / floor of 2,000 samples
against 2,000 fresh data points for the ODE (Euler, RK4) and the SDE sampler
(``sample(method="sde", noise=g)``, Euler-Maruyama) at several numbers of network
evaluations (NFE), on FlowMatcher's default model of each set, 3 seeds, paired (the
same models and the same fresh data for every sampler); the floor is the W2 of two
fresh draws averaged over 20 pairs.  Writes bench/results/sde.md and
docs/images/sde_w2_nfe.png.

    python bench/sde.py [--sets 2spirals 8gaussians checkerboard] [--seeds 0 1 2]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import markdown_table, w2_nfe_axes  # noqa: E402
from fmnumpy import FlowMatcher  # noqa: E402
from fmnumpy.euclidean import datasets  # noqa: E402
from fmnumpy.metrics import w2  # noqa: E402

SAMPLERS = ([(f"euler {k}", "euler", k, None, k) for k in (10, 25, 100)]
            + [(f"rk4 {k}", "rk4", k, None, 4 * k) for k in (3, 6, 25)]
            + [(f"sde g={g} {k}", "sde", k, g, k) for g in (0.5, 1.0, 2.0)
               for k in (10, 25, 100)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", nargs="+", default=["2spirals", "8gaussians", "checkerboard"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--out", default="bench/results/sde.md")
    ap.add_argument("--plot", default="docs/images/sde_w2_nfe.png")
    a = ap.parse_args(argv)
    res = {}                                   # (set, sampler) -> [W2 / floor per seed]
    floors = {}
    for name in a.sets:
        rng = np.random.default_rng([7, 25])
        fl = [w2(datasets.sample(name, a.n, rng, stratified=False),
              datasets.sample(name, a.n, rng, stratified=False))
              for _ in range(a.pairs)]
        floors[name] = (float(np.mean(fl)), float(np.std(fl, ddof=1)))
        for seed in a.seeds:
            fm = FlowMatcher(seed=seed, threads=1).fit(name)
            fresh = datasets.sample(name, a.n, np.random.default_rng([seed, 99]), stratified=False)
            for label, method, steps, noise, nfe in SAMPLERS:
                kw = {} if noise is None else {"noise": noise}
                x = fm.sample(a.n, method=method, steps=steps, seed=seed + 1, **kw)
                res.setdefault((name, label), []).append(w2(x, fresh) / floors[name][0])
            print(name, seed, {k[1]: round(v[-1], 3) for k, v in res.items() if k[0] == name},
                  flush=True)
    lines = ["# Stochastic sampling against the ODE", "",
             f"`python bench/sde.py {' '.join(sys.argv[1:])}`: W2 / floor (mean +- sd over "
             f"seeds {a.seeds}) of {a.n} samples of FlowMatcher's default model against "
             f"{a.n} independent fresh data points, the same models and data for every sampler; NFE = "
             "network evaluations per sample. Floors (W2 of two fresh draws, "
             f"{a.pairs} pairs): " + ", ".join(f"{k} {m:.4f} +- {s:.4f}"
                                              for k, (m, s) in floors.items()) + ".", "",
             markdown_table(["sampler", "NFE"] + a.sets,
                            [[label, nfe] + [f"{np.mean(res[s, label]):.3f} +- "
                                             f"{np.std(res[s, label], ddof=1):.3f}"
                                             for s in a.sets]
                             for label, _, _, _, nfe in SAMPLERS])]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(a.sets), figsize=(4.2 * len(a.sets), 3.4), squeeze=False)
    for ax, s in zip(axes[0], a.sets):
        for family in ("euler", "rk4", "sde g=0.5", "sde g=1.0", "sde g=2.0"):
            pts = [(nfe, np.mean(res[s, label])) for label, _, _, _, nfe in SAMPLERS
                   if label.rsplit(" ", 1)[0] == family]
            ax.plot(*zip(*pts), marker="o", label=family)
        w2_nfe_axes(ax, s)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=90)


if __name__ == "__main__":
    main()
