"""What exact minibatch OT adds to a training step (issue: OT cheaper than the step).

    NUMBA_NUM_THREADS=1 python bench/ot_cost.py [A|B] [--rounds 5] [--out FILE.json]

Validates first: on every chunk it will time, ``exact_ot_chunk`` returns a
permutation of x0 in each batch whose cost equals the optimum of
``scipy.optimize.linear_sum_assignment`` (to 1e-12).  Then alternates rounds in one
process, so that drift of the machine hits all alike:

- 320 training steps of the model with independent pairs (data drawing included);
- the exact OT pairing (cost matrix, sliced guess, Jonker-Volgenant) of 10 chunks of
  64 batches of 256, 2spirals data against N(0, I) noise, as ``train.BatchStream``
  calls it; then one chunk of 16 batches of 512 and one of 4 batches of 1024;
- scipy's ``linear_sum_assignment`` on 8 of the batches of 256 (cost matrix
  included), the reference a user would otherwise pick.

BLAS (the training step's matrix products, and scipy) gets as many threads as Numba,
so ``NUMBA_NUM_THREADS=1`` compares one core with one core (two thread pools on a
busy 2-core machine also collapse: DEVELOPERS.md, "Threads").  Prints the medians
over rounds of the wall time per step and per batch, and of the process CPU time,
which counts only this process and so is steadier on a shared machine; writes every
number to ``bench/results/ot_cost.json`` (or ``--out``).
"""
import argparse
import os
import sys
import time

import numba
import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.common import machine_info, median, write_json  # noqa: E402
from fmnumpy import FlowMatcher  # noqa: E402
from fmnumpy.couplings.registry import exact_ot_chunk  # noqa: E402
from fmnumpy.euclidean.datasets import sample  # noqa: E402
from fmnumpy.couplings.distances import sq_dists  # noqa: E402

MODELS = {"A": ((64, 64, 64), "selu"), "B": ((256, 256, 256), "silu")}
DATASET = "2spirals"
STEPS = 320                                   # training steps per round
OT_CHUNKS = {256: (10, 64), 512: (1, 16), 1024: (1, 4)}   # batch: (chunks, batches each)
SCIPY_BATCHES = 8                             # batches of 256 solved by scipy per round


def timed(fn, *args):
    """(wall s, process CPU s) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w, time.process_time() - c


def draw_chunks(B, n_chunks, K, rng):
    """n_chunks chunks (x0, x1), each (K, B, 2): noise float32, data as drawn."""
    out = []
    for _ in range(n_chunks):
        x1 = sample(DATASET, K * B, rng).reshape(K, B, 2)
        x0 = rng.standard_normal((K, B, 2)).astype(np.float32)
        out.append((x0, x1))
    return out


def scipy_pairing(x0, x1):
    C = sq_dists(x1, x0)
    return C, linear_sum_assignment(C)


def validate(chunks):
    """Every batch re-paired by a permutation of its x0, at scipy's optimal cost."""
    for x0, x1 in chunks:
        y0, y1 = exact_ot_chunk(x0, x1)
        assert y1 is x1
        for c in range(x0.shape[0]):
            same = np.lexsort(y0[c].T), np.lexsort(x0[c].T)
            assert np.array_equal(y0[c][same[0]], x0[c][same[1]]), "not a permutation"
            C, (r, cols) = scipy_pairing(x0[c], x1[c])
            ours = ((y0[c].astype(np.float64) - x1[c]) ** 2).sum()
            assert abs(ours - C[r, cols].sum()) <= 1e-12 * C[r, cols].sum(), "not optimal"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="A", choices=sorted(MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "ot_cost.json"))
    args = ap.parse_args()

    threadpool_limits(numba.get_num_threads())        # every BLAS loaded so far
    hidden, act = MODELS[args.model]
    fm = FlowMatcher(hidden=hidden, activation=act, x_freqs=0, seed=0)   # the workload model
    fm.fit(DATASET, steps=64, batch_size=256)                        # compile
    rng = np.random.default_rng(0)
    chunks = {B: draw_chunks(B, n, K, rng) for B, (n, K) in OT_CHUNKS.items()}
    for batch_chunks in chunks.values():
        validate(batch_chunks)                                       # compiles too
    x0s, x1s = chunks[256][0]
    scipy_pairing(x0s[0], x1s[0])

    names = ["train_step"] + [f"ot_{B}" for B in OT_CHUNKS] + ["scipy_256"]
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for _ in range(args.rounds):
        w, c = timed(lambda: fm.fit(DATASET, steps=fm.step_ + STEPS, batch_size=256,
                                    warm_start=True))
        wall["train_step"].append(w / STEPS)
        cpu["train_step"].append(c / STEPS)
        for B, (n, K) in OT_CHUNKS.items():
            w = c = 0.0
            for x0, x1 in chunks[B]:
                dw, dc = timed(exact_ot_chunk, x0, x1)
                w, c = w + dw, c + dc
            wall[f"ot_{B}"].append(w / (n * K))
            cpu[f"ot_{B}"].append(c / (n * K))
        w, c = timed(lambda: [scipy_pairing(x0s[k], x1s[k]) for k in range(SCIPY_BATCHES)])
        wall["scipy_256"].append(w / SCIPY_BATCHES)
        cpu["scipy_256"].append(c / SCIPY_BATCHES)

    med = {n: (median(wall[n]), median(cpu[n])) for n in names}
    step_w, step_c = med["train_step"]
    labels = {"train_step": f"training step, model {args.model}, batch 256",
              "scipy_256": "scipy linear_sum_assignment, batch 256"}
    print(f"model {args.model}, {DATASET} vs N(0, I), {numba.get_num_threads()} Numba and BLAS "
          f"thread(s), {args.rounds} rounds; medians per step / per batch")
    print(f"{'':44s} {'wall ms':>8s} {'CPU ms':>8s}   CPU / step")
    for n in names:
        label = labels.get(n, f"exact OT pairing, one batch of {n[3:]}")
        w, c = med[n]
        print(f"{label:44s} {w * 1e3:8.3f} {c * 1e3:8.3f}   {c / step_c:6.2f}x")
    ot_w, ot_c = med["ot_256"]
    print(f"exact OT of a 256 batch vs the step: {ot_w / step_w:.2f}x wall, "
          f"{ot_c / step_c:.2f}x CPU; scipy takes {med['scipy_256'][1] / ot_c:.0f}x longer")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out, {
        "model": args.model, "dataset": DATASET, "steps_per_round": STEPS,
        "ot_chunks": {str(B): list(v) for B, v in OT_CHUNKS.items()},
        "scipy_batches": SCIPY_BATCHES, "rounds": args.rounds,
        "numba_threads": numba.get_num_threads(), "machine": machine_info(),
        "wall_s": wall, "cpu_s": cpu,
        "median_ms": {n: [m * 1e3 for m in med[n]] for n in names}})


if __name__ == "__main__":
    main()
