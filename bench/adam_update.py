"""The parameter update after the gradient: fmnumpy's loops against their scalar forms.

    python bench/adam_update.py [--reps 2000] [--out bench/results]

``optim.adam_update`` is compiled without Python's zero-division check, which lets
LLVM vectorise the loop, and ``optim.grad_norm`` keeps NORM_LANES partial sums in
place of one running sum.  Their scalar forms (the loop with the division check,
one running sum) are compiled here.  Each pair is timed alternated (one, the other,
...), 7 rounds of ``--reps`` calls on the benchmark models' parameter counts
(bench/README.md, Workloads) on one thread.  Writes adam_update.json and adam_update.md.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common as C  # noqa: E402
from fmnumpy.train import optim  # noqa: E402

ROUNDS = 7


# optim.adam_update's own source compiled with Python's zero-division check (it stays scalar)
adam_scalar = njit(error_model="python")(optim.adam_update.py_func)


@njit
def norm_running(g):
    """||g|| as one running float64 sum."""
    s = 0.0
    for i in range(g.shape[0]):
        gi = np.float64(g[i])
        s += gi * gi
    return math.sqrt(s)


@njit
def adam_reps(fn, theta, g, m, v, reps):
    for k in range(1, reps + 1):
        fn(theta, g, m, v, k, 1e-3, 0.9, 0.999, 1e-8, 0.0, True)


@njit
def norm_reps(fn, g, reps):
    s = 0.0
    for _ in range(reps):
        s += fn(g)
    return s


def alternate(a, b, reps):
    """Median seconds per call of a(reps) and b(reps), alternated over ROUNDS."""
    a(1), b(1)
    ta, tb = [], []
    for _ in range(ROUNDS):
        for f, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            f(reps)
            out.append((time.perf_counter() - t0) / reps)
    return float(np.median(ta)), float(np.median(tb))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--out", default=os.path.join(C.REPO, "bench", "results"))
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for name in ("A", "B"):
        P = C.MODELS[name]["params"]
        reps = max(20, a.reps * C.MODELS["A"]["params"] // P)    # --reps are model A's
        bufs = [rng.standard_normal(P).astype(np.float32) for _ in range(4)]
        bufs[3] = np.abs(bufs[3])
        ours = [x.copy() for x in bufs]
        t_vec, t_sc = alternate(lambda r: adam_reps(optim.adam_update, *ours, r),
                                lambda r: adam_reps(adam_scalar, *bufs, r), reps)
        same = all(np.array_equal(x, y) for x, y in zip(ours, bufs))
        g = bufs[1]
        t_lanes, t_run = alternate(lambda r: norm_reps(optim.grad_norm, g, r),
                                   lambda r: norm_reps(norm_running, g, r), reps)
        rows.append(dict(model=name, params=P, adam_us=t_vec * 1e6, adam_scalar_us=t_sc * 1e6,
                         adam_same_bits=same, norm_us=t_lanes * 1e6, norm_running_us=t_run * 1e6,
                         norm_rel_diff=abs(optim.grad_norm(g) / norm_running(g) - 1.0)))
        print(f"{name} (P = {P:,}): adam {t_vec * 1e6:.1f} us (scalar {t_sc * 1e6:.1f}, "
              f"same bits {same}); norm {t_lanes * 1e6:.2f} us (running {t_run * 1e6:.2f})",
              flush=True)
    res = dict(machine=C.cpu_model(), rounds=ROUNDS,
               started=time.strftime("%Y-%m-%d %H:%M:%S"), rows=rows)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "adam_update.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = ["# The update after the gradient: vectorised against scalar loops", "",
             f"{res['machine']}, one thread, {res['started']}; median of {ROUNDS} alternated "
             "rounds.  `python bench/adam_update.py`", "",
             "| model | parameters | adam_update us | scalar loop us | speed-up | same bits "
             "| grad_norm us | one running sum us | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['adam_us']:.1f} | "
                     f"{r['adam_scalar_us']:.1f} | {r['adam_scalar_us'] / r['adam_us']:.2f}x | "
                     f"{'yes' if r['adam_same_bits'] else 'NO'} | {r['norm_us']:.2f} | "
                     f"{r['norm_running_us']:.2f} | {r['norm_running_us'] / r['norm_us']:.2f}x |")
    with open(os.path.join(a.out, "adam_update.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}/adam_update.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
