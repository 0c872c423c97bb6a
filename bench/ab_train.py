"""Training speed of two checkouts of fmnumpy, alternated in one window.

    python bench/ab_train.py OLD_DIR NEW_DIR [--threads 2] [--runs 7] [--steps 200]
                             [--persistent] [--workloads A/256 ...]

Each checkout runs in its own child process (``PYTHONPATH`` set to it, every thread
pool pinned to ``--threads``) and trains the benchmark workloads of
bench/README.md#workloads (model A / batch 256, B / 256, B / 4096) through the public
``FlowMatcher.fit(..., warm_start=True, until=k + steps)``, the same call in both
(``--persistent``: one data stream and stepper for all runs, as bench/cpu.py times
them, without fit's set-up per call); after a warm-up the timed runs alternate old,
new, old, new...  The ratio is the median of the paired ratios new/old of steps per
second.  Writes a JSON file.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the workloads' options; the pause lets the other child's idle BLAS threads stop spinning
from bench.common import PAUSE_S, fm_options, pinned_env  # noqa: E402

WORKLOADS = (("A", 256), ("B", 256), ("B", 4096))
TOTAL = 1_000_000          # the schedule's length: stays in its first part

CHILD = r"""
import sys, time, json
from fmnumpy import FlowMatcher
model, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
persistent = sys.argv[5] == "1"
opts = json.loads(sys.argv[4])
fm = FlowMatcher(**opts)
fm.fit("2spirals", steps=TOTAL, batch_size=batch, until=50)
if persistent:                       # one stream and stepper, as bench/cpu.py times them
    import numpy as np
    try:                             # 0.2.0's layout, else 0.1.0's
        from fmnumpy.euclidean import datasets
        from fmnumpy.euclidean.stream import BatchStream
        flat = False
    except ImportError:
        from fmnumpy import datasets
        from fmnumpy.train import BatchStream
        flat = True
    stream = BatchStream(datasets.make_sampler("2spirals"), 2, batch, 0, np.float32)
    stepper = fm._stepper(stream, batch)
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    t0 = time.perf_counter()
    if persistent:
        fm._run(*((stream, stepper) if flat else (stepper, stream)), TOTAL, until=fm.step_ + n)
    else:
        fm.fit("2spirals", steps=TOTAL, batch_size=batch, warm_start=True, until=fm.step_ + n)
    print(time.perf_counter() - t0, flush=True)
""".replace("TOTAL", str(TOTAL))


def start(src, model, batch, threads, persistent=False):
    env = pinned_env(threads, {"PYTHONPATH": os.path.abspath(src)})   # that checkout alone
    p = subprocess.Popen([sys.executable, "-c", CHILD, model, str(batch), str(threads),
                          json.dumps(fm_options(model, 0, threads)),
                          "1" if persistent else "0"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env, cwd="/")
    assert p.stdout.readline().strip() == "ready"
    return p


def timed(p, steps):
    time.sleep(PAUSE_S)
    p.stdin.write(f"{steps}\n")
    p.stdin.flush()
    return float(p.stdout.readline())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--persistent", action="store_true",
                    help="time runs of one data stream and stepper (as bench/cpu.py does) "
                         "instead of fit(warm_start=True) calls")
    ap.add_argument("--workloads", nargs="+", default=["A/256", "B/256", "B/4096"],
                    choices=["A/256", "B/256", "B/4096"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "ab_train.json"))
    a = ap.parse_args(argv)
    res = dict(old=a.old, new=a.new, threads=a.threads, runs=a.runs, steps=a.steps,
               persistent=a.persistent,
               machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               started=time.strftime("%Y-%m-%d %H:%M:%S"), rows=[])
    for model, batch in WORKLOADS:
        if f"{model}/{batch}" not in a.workloads:
            continue
        steps = a.steps if batch <= 256 else max(10, a.steps // 10)
        old, new = (start(src, model, batch, a.threads, a.persistent) for src in (a.old, a.new))
        for p in (old, new):
            timed(p, steps)                                         # warm-up
        t_old, t_new = [], []
        for _ in range(a.runs):
            t_old.append(timed(old, steps))
            t_new.append(timed(new, steps))
        for p in (old, new):
            p.stdin.close()
            p.wait()
        ratios = sorted(o / n for o, n in zip(t_old, t_new))      # new steps/s over old
        row = dict(model=model, batch=batch, steps_per_run=steps,
                   old_steps_per_s=steps / sorted(t_old)[len(t_old) // 2],
                   new_steps_per_s=steps / sorted(t_new)[len(t_new) // 2],
                   paired_ratio_median=ratios[len(ratios) // 2],
                   paired_ratio_range=[ratios[0], ratios[-1]], old_s=t_old, new_s=t_new)
        res["rows"].append(row)
        print(f"{model}/{batch}: old {row['old_steps_per_s']:.1f}, new "
              f"{row['new_steps_per_s']:.1f} steps/s; new/old {row['paired_ratio_median']:.3f} "
              f"(range {ratios[0]:.3f}-{ratios[-1]:.3f})", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
