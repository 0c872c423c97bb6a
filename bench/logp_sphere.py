"""The likelihood on the sphere against sampling: ``log_prob`` of 10,000 points in
float32 passes (the default) and in float64 against ``sample`` of the same 10,000
points with the same solver (RK4, 100 steps), alternated in three rounds on each
number of threads, on ManifoldFlowMatcher("sphere")'s default network trained 2,000
steps on vmf.  Writes bench/results/logp_sphere.md.

    python bench/logp_sphere.py [--threads 1 2] [--rounds 3] [--float64] [--out PATH]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import markdown_table  # noqa: E402
from fmnumpy import ManifoldFlowMatcher  # noqa: E402


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--out", default="bench/results/logp_sphere.md")
    ap.add_argument("--float64", action="store_true",
                    help="time the float64 oracle in every round (else only the first)")
    a = ap.parse_args(argv)
    fm = ManifoldFlowMatcher("sphere", seed=0, threads=1).fit("vmf", steps=2000)
    x = fm.sample(a.n, seed=1).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fm.log_prob(x[:10]), fm.log_prob(x[:10], dtype="float64")       # compile
    rows, l64 = [], None
    for r in range(a.rounds):
        for th in a.threads:
            fm.threads = th
            ts, _ = timed(lambda: fm.sample(a.n, seed=2))
            t32, l32 = timed(lambda: fm.log_prob(x))
            once = a.float64 or l64 is None
            t64, l64 = (timed(lambda: fm.log_prob(x, dtype="float64")) if once
                        else (float("nan"), l64))
            rows.append((r, th, ts, t32, t64, float(np.abs(l32 - l64).max())))
            print(rows[-1], flush=True)
    lines = ["# The likelihood on the sphere against sampling", "",
             f"`python bench/logp_sphere.py {' '.join(sys.argv[1:])}`: log_prob of {a.n:,} "
             "points (RK4, 100 steps, the state in float64, the network's passes in float32 "
             "(default) or float64) against sample of as many points with the same solver, "
             "alternated; ManifoldFlowMatcher('sphere') defaults, 2,000 steps on vmf.", "",
             markdown_table(
                 ["round", "threads", "sample s", "log_prob s (float32)", "ratio",
                  "log_prob s (float64)", "ratio", "max abs diff, nats"],
                 [[r, th, f"{ts:.2f}", f"{t32:.2f}", f"{t32 / ts:.2f}x",
                   f"{t64:.2f}" if t64 == t64 else "-", f"{t64 / ts:.2f}x" if t64 == t64 else "-",
                   f"{d:.1e}"] for r, th, ts, t32, t64, d in rows])]
    for th in a.threads:
        mine = [row for row in rows if row[1] == th]
        r32 = [row[3] / row[2] for row in mine]
        lines.append("")
        lines.append(f"{th} thread(s): float32 log_prob / sample {min(r32):.2f}x to "
                     f"{max(r32):.2f}x over {len(mine)} rounds.")
    if len(a.threads) > 1:
        one = {row[0]: row[3] for row in rows if row[1] == a.threads[0]}
        lines.append(f"log_prob float32, {a.threads[0]} thread(s) / {a.threads[-1]}: " + ", ".join(
            f"{one[row[0]] / row[3]:.2f}x" for row in rows if row[1] == a.threads[-1]) + ".")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
