"""The data-parallel training step against the serial one, per network width.

    python bench/split_step.py [--threads 2] [--steps 400] [--rounds 5] [--out bench/results]

For each model (A: 3 x 64 SELU; the Fourier 3 x 128 SiLU with x_freqs 3; B: 3 x 256
SiLU), batch 256 on 2spirals: the serial step (``CpuStepper(threads=1)``, BLAS's
threads inside the products) and the split step (``threads=T``: T slices of the
batch on Numba's threads, single-threaded BLAS), each through ``CpuStepper.run``
(a data chunk's steps per compiled call).  Rounds alternate serial, split, serial,
split, ... with a pause between runs; the median steps/s of each and their ratio
are written to ``split_step.json``/``.md``.  Sets the thread counts before numpy and
numba load.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MODELS = {
    "A": dict(hidden=(64, 64, 64), activation="selu", x_freqs=0),
    "fourier128": dict(hidden=(128, 128, 128), activation="silu", x_freqs=3),
    "B": dict(hidden=(256, 256, 256), activation="silu", x_freqs=0),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import numpy as np

    from bench.common import PAUSE_S, machine_info, markdown_table, write_json
    from fmnumpy import datasets, mlp
    from fmnumpy.optim import AdamConfig
    from fmnumpy.paths import STRAIGHT
    from fmnumpy.state import TrainState
    from fmnumpy.step import CpuStepper
    from fmnumpy.train import BatchStream, PathNoise

    res = {"machine": machine_info(), "threads": a.threads, "batch": a.batch,
           "steps": a.steps, "rounds": a.rounds, "models": {}}
    rows = []
    for name, m in MODELS.items():
        spec = mlp.MLPSpec(2, m["hidden"], m["activation"], x_freqs=m["x_freqs"])
        opt = AdamConfig(lr=1e-3)
        draw = lambda n, r: datasets.sample("2spirals", n, r)          # noqa: E731
        variants = {}
        for label, threads in (("serial", 1), ("split", a.threads)):
            stream = BatchStream(draw, 2, a.batch, 0, np.float32, time_power=2.0)
            noise = PathNoise(False, 2, a.batch, 0, np.float32)
            stepper = CpuStepper(spec, opt, (STRAIGHT, 0.0), a.batch, noise, threads=threads)
            state = TrainState(mlp.init_params(spec.sizes, np.random.default_rng(0)))
            stepper.run(state, stream, 50, 10 ** 9)                         # warm-up, compile
            variants[label] = (stepper, state, stream)
        times = {label: [] for label in variants}
        for _ in range(a.rounds):
            for label, (stepper, state, stream) in variants.items():
                time.sleep(PAUSE_S)
                t0 = time.perf_counter()
                stepper.run(state, stream, a.steps, 10 ** 9)
                times[label].append(a.steps / (time.perf_counter() - t0))
        med = {label: float(np.median(v)) for label, v in times.items()}
        res["models"][name] = {"hidden": list(m["hidden"]), "x_freqs": m["x_freqs"],
                               "steps_per_s": times, "median": med,
                               "split_over_serial": med["split"] / med["serial"]}
        rows.append([name, f"{m['hidden'][0]} x {len(m['hidden'])}", f"{med['serial']:.0f}",
                     f"{med['split']:.0f}", f"{med['split'] / med['serial']:.2f}"])
        print(rows[-1], flush=True)
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "split_step.json"), res)
    md = (f"# The data-parallel step against the serial one\n\nBatch {a.batch}, {a.threads} "
          f"threads, median steps/s of {a.rounds} alternated rounds of {a.steps} steps; "
          f"{res['machine']['cpu']}, {res['machine']['started']}.\n\n"
          + markdown_table(["model", "hidden", "serial steps/s", "split steps/s",
                            "split / serial"], rows)
          + "\n\nCommand: `python bench/split_step.py "
          + " ".join(sys.argv[1:] if argv is None else argv) + "`\n")
    with open(os.path.join(a.out, "split_step.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
