"""Sweeps on Dask, measured: a 2 datasets x 2 widths x 3 seeds grid of short runs
(bench/sweep_spec.toml), one thread a run, and five ways of running it:

    serial        --workers 1 (the reference)
    local         a LocalCluster of 2 worker processes
    killed        the same, one worker process SIGKILLed mid-sweep (Dask retries its task)
    interrupted   the sweep SIGINTed mid-way, then run again (finished runs skipped,
                  interrupted ones resumed from their checkpoints)
    scheduler     `dask scheduler` and two `dask worker` processes started on their own,
                  the sweep pointed at the address

Each table is compared with the serial one with the measured column (train_seconds)
left out: equal means every other number of summary.csv is the same, bit for bit.

    python bench/sweep.py [--out /tmp/fmnumpy_sweep] [--report bench/results/sweep.md]
"""
import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "bench", "sweep_spec.toml")
ENV = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
           MKL_NUM_THREADS="1")


def sweep(out, *more, wait=True):
    """``fmnumpy sweep`` of the spec into ``out`` in a child process, with Ctrl-C's
    SIGINT restored (a child of a background job inherits it ignored)."""
    cmd = [sys.executable, "-m", "fmnumpy", "sweep", SPEC, "--out", out, *more]
    p = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if wait:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return p


def timed(out, *more):
    t = time.perf_counter()
    sweep(out, *more)
    return time.perf_counter() - t


def table(out):
    """summary.csv's rows without the measured column."""
    with open(os.path.join(out, "summary.csv")) as f:
        rows = list(csv.reader(f))
    drop = rows[0].index("train_seconds")
    return [[c for i, c in enumerate(r) if i != drop] for r in rows]


def ended(out):
    root = os.path.join(out, "runs")
    return sum(os.path.exists(os.path.join(root, k, "metrics.json"))
               for k in os.listdir(root)) if os.path.isdir(root) else 0


def wait_for(out, n, p, limit=600):
    t = time.perf_counter()
    while ended(out) < n and p.poll() is None and time.perf_counter() - t < limit:
        time.sleep(0.2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="/tmp/fmnumpy_sweep")
    ap.add_argument("--report", default=os.path.join(REPO, "bench", "results", "sweep.md"))
    a = ap.parse_args(argv)
    import psutil
    shutil.rmtree(a.out, ignore_errors=True)
    d = {k: os.path.join(a.out, k) for k in ("serial", "local", "killed", "interrupted",
                                              "scheduler")}
    rows = []
    # serial and local alternate twice: wall time against wall time in one window
    walls = {"serial": [], "local": []}
    for rep in range(2):
        for k, workers in (("serial", 1), ("local", 2)):
            shutil.rmtree(d[k], ignore_errors=True)
            walls[k].append(timed(d[k], "--workers", str(workers)))
    ref = table(d["serial"])
    rows.append(["serial (--workers 1)", " / ".join(f"{w:.1f}" for w in walls["serial"]),
                 "(the reference)"])
    rows.append(["LocalCluster, 2 workers", " / ".join(f"{w:.1f}" for w in walls["local"]),
                 "equal" if table(d["local"]) == ref else "DIFFERENT"])
    # one worker process killed once 2 runs have ended
    t = time.perf_counter()
    p = sweep(d["killed"], "--workers", "2", wait=False)
    wait_for(d["killed"], 2, p)
    workers = [c for c in psutil.Process(p.pid).children(recursive=True)
               if "spawn_main" in " ".join(c.cmdline())]
    victim = max(workers, key=lambda c: c.create_time()) if workers else None
    if victim is not None:
        victim.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    rows.append([f"2 workers, one SIGKILLed after 2 runs (pid {victim.pid if victim else '-'})",
                 f"{time.perf_counter() - t:.1f}",
                 "equal" if p.returncode == 0 and table(d["killed"]) == ref else
                 f"DIFFERENT (exit {p.returncode})"])
    # the whole sweep interrupted, then run again
    t = time.perf_counter()
    p = sweep(d["interrupted"], "--workers", "2", wait=False)
    wait_for(d["interrupted"], 3, p)
    p.send_signal(signal.SIGINT)
    p.communicate()
    before = ended(d["interrupted"])
    sweep(d["interrupted"], "--workers", "2")
    rows.append([f"interrupted (SIGINT, exit {p.returncode}) after {before} runs, run again",
                 f"{time.perf_counter() - t:.1f}",
                 "equal" if table(d["interrupted"]) == ref else "DIFFERENT"])
    # a scheduler and two workers of their own
    port = 8787 + os.getpid() % 1000
    addr = f"tcp://127.0.0.1:{port}"
    sched = subprocess.Popen(["dask", "scheduler", "--port", str(port), "--dashboard-address",
                              ":0"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    wks = [subprocess.Popen(["dask", "worker", addr, "--nworkers", "1", "--nthreads", "1"],
                            env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL) for _ in range(2)]
    time.sleep(5)
    try:
        wall = timed(d["scheduler"], "--scheduler", addr)
        rows.append([f"`dask scheduler` + 2 `dask worker` at {addr}", f"{wall:.1f}",
                     "equal" if table(d["scheduler"]) == ref else "DIFFERENT"])
    finally:
        for q in wks + [sched]:
            q.terminate()
    lines = ["# Sweeps on Dask", "",
             f"`python bench/sweep.py`: the grid of bench/sweep_spec.toml (2 datasets x 2 widths "
             f"x 3 seeds = {len(ref) - 1} runs of 20,000 steps, one thread a run) on this "
             f"{os.cpu_count()}-core machine. Equal: summary.csv is the serial run's, every "
             "number but the measured train_seconds, bit for bit.", "",
             "| how | wall s | table |", "|---|---|---|"]
    lines += [f"| {a_} | {b} | {c} |" for a_, b, c in rows]
    speed = [s / l for s, l in zip(walls["serial"], walls["local"])]
    lines += ["", "Serial over 2 workers, alternated in one window: "
              + ", ".join(f"{x:.2f}x" for x in speed) + "."]
    with open(a.report, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
