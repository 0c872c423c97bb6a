"""The data-parallel training step against the serial one, per network width.

    python bench/split_step.py [--threads 2] [--steps 400] [--rounds 9] [--batch 256]
                               [--models A fourier128 B] [--out bench/results]

For each model (A: 3 x 64 SELU; the Fourier 3 x 128 SiLU with x_freqs 3; B: 3 x 256
SiLU) on 2spirals: the serial step (``CpuStepper(threads=1)``, BLAS's threads inside
the products) and the split step (``threads=T``: T slices of the batch on Numba's
threads, single-threaded BLAS), each through ``CpuStepper.run`` (a data chunk's
steps per compiled call), each in its own child process with every thread pool
pinned to ``--threads``.  Rounds alternate serial, split, serial, split, ... with a
pause between runs (the other child's idle threads stop spinning); the median
steps/s of each, the median of the paired ratios and their range are written to
``split_step.json``/``.md``.  (Both variants in one process, switching BLAS's thread
limit between runs, handicapped the serial runs: OpenBLAS's parked workers.)
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

MODELS = {
    "A": dict(hidden=(64, 64, 64), activation="selu", x_freqs=0),
    "fourier128": dict(hidden=(128, 128, 128), activation="silu", x_freqs=3),
    "B": dict(hidden=(256, 256, 256), activation="silu", x_freqs=0),
}


def child(name, threads, batch):
    """Serve timed runs of one stepper: read a step count, train, print the seconds."""
    import numpy as np

    from fmnumpy.euclidean import datasets
    from fmnumpy.nn import mlp
    from fmnumpy.train.optim import AdamConfig
    from fmnumpy.euclidean.paths import STRAIGHT
    from fmnumpy.train.state import TrainState
    from fmnumpy.euclidean.step import CpuStepper
    from fmnumpy.euclidean.stream import BatchStream, PathNoise
    m = MODELS[name]
    spec = mlp.MLPSpec(2, m["hidden"], m["activation"], x_freqs=m["x_freqs"])
    stream = BatchStream(datasets.make_sampler("2spirals"), 2, batch, 0, np.float32,
                         time_power=2.0)
    noise = PathNoise(False, 2, batch, 0, np.float32)
    stepper = CpuStepper(spec, AdamConfig(lr=1e-3), (STRAIGHT, 0.0), batch, noise,
                         threads=threads)
    state = TrainState(mlp.init_params(spec.sizes, np.random.default_rng(0)))
    stepper.run(state, stream, 50, 10 ** 9)                         # warm-up, compile
    print("ready", flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        stepper.run(state, stream, int(line), 10 ** 9)
        print(time.perf_counter() - t0, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    import numpy as np

    from bench.common import PAUSE_S, machine_info, markdown_table, pinned_env, write_json

    res = {"machine": machine_info(), "threads": a.threads, "batch": a.batch,
           "steps": a.steps, "rounds": a.rounds, "models": {}}
    rows = []
    for name in a.models:
        m = MODELS[name]
        kids = {}
        for label, threads in (("serial", 1), ("split", a.threads)):
            kids[label] = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child", name, str(threads),
                 str(a.batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env=pinned_env(a.threads), cwd=REPO)
            assert kids[label].stdout.readline().strip() == "ready"
        times = {label: [] for label in kids}
        for _ in range(a.rounds):
            for label, p in kids.items():
                time.sleep(PAUSE_S)
                p.stdin.write(f"{a.steps}\n")
                p.stdin.flush()
                times[label].append(a.steps / float(p.stdout.readline()))
        for p in kids.values():
            p.stdin.close()
            p.wait()
        med = {label: float(np.median(v)) for label, v in times.items()}
        paired = sorted(s / r for s, r in zip(times["split"], times["serial"]))
        res["models"][name] = {"hidden": list(m["hidden"]), "x_freqs": m["x_freqs"],
                               "steps_per_s": times, "median": med,
                               "split_over_serial": med["split"] / med["serial"],
                               "paired_median": float(np.median(paired)),
                               "paired_range": [paired[0], paired[-1]]}
        rows.append([name, f"{m['hidden'][0]} x {len(m['hidden'])}", f"{med['serial']:.0f}",
                     f"{med['split']:.0f}", f"{med['split'] / med['serial']:.2f}",
                     f"{np.median(paired):.2f} ({paired[0]:.2f}-{paired[-1]:.2f})"])
        print(rows[-1], flush=True)
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "split_step.json"), res)
    md = (f"# The data-parallel step against the serial one\n\nBatch {a.batch}, {a.threads} "
          f"threads, median steps/s of {a.rounds} alternated rounds of {a.steps} steps, each "
          f"variant in its own process; {res['machine']['cpu']}, {res['machine']['started']}."
          "\n\n"
          + markdown_table(["model", "hidden", "serial steps/s", "split steps/s",
                            "split / serial", "paired ratio (range)"], rows)
          + "\n\nCommand: `python bench/split_step.py "
          + " ".join(sys.argv[1:] if argv is None else argv) + "`\n")
    with open(os.path.join(a.out, "split_step.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
