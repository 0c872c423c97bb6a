"""Running a sweep on Dask distributed: each run one task, on a ``LocalCluster`` of N worker
processes or on a running scheduler (docs/sweeps.md).

A run's folder, DIR/runs/KEY, holds ``options.json`` (family, options, seed, its command
line), ``checkpoint.npz`` (every ``spec.CHECKPOINT_EVERY`` steps) and, when it has ended,
``metrics.json``.  A run whose ``metrics.json`` exists is skipped; one with a checkpoint and
no metrics is continued with ``--resume``, bit for bit at the same thread count
(docs/checkpoints.md), so a rerun of an interrupted sweep, or Dask's retry of a task whose
worker died, ends where an unbroken run would.
"""
import contextlib
import glob
import io
import json
import logging
import os
import time

from fmnumpy.errors import FmnumpyError
from fmnumpy.sweep import spec as _spec

RETRIES = 2          # Dask's retries of a task whose worker died or which raised
CONNECT_S = 5        # seconds to reach a scheduler before giving up


def sweep_file(out):
    return os.path.join(out, "sweep.json")


def run_folder(out, run):
    return os.path.join(out, "runs", run.key)


def _identity(spec):
    return {"family": spec.family, "seeds": spec.seeds, "fixed": spec.fixed,
            "grid": spec.grid, "baseline": spec.baseline,
            **({"configs": spec.configs} if spec.configs else {})}


def check_folder(spec, out):
    """One line when ``out`` holds another sweep's runs (its sweep.json differs from this
    spec's, or runs without a sweep.json); writes nothing."""
    mine = _identity(spec)
    path = sweep_file(out)
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        if {k: theirs.get(k) for k in mine} != json.loads(json.dumps(mine)):
            raise FmnumpyError(f"{out} holds another sweep's runs (its sweep.json differs from "
                               "this spec); pass another --out")
    elif os.path.isdir(os.path.join(out, "runs")) and os.listdir(os.path.join(out, "runs")):
        raise FmnumpyError(f"{out}/runs holds runs of no known sweep; pass another --out")


def prepare(spec, out, threads):
    """Write DIR/sweep.json and each run's options.json (after :func:`check_folder`).
    Returns [(run, its command line)]."""
    check_folder(spec, out)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    mine = _identity(spec)
    with open(sweep_file(out), "w") as f:
        json.dump(dict(mine, threads_per_run=threads), f, indent=1)
    todo = []
    for run in _spec.runs(spec):
        folder = run_folder(out, run)
        os.makedirs(folder, exist_ok=True)
        line = _spec.argv(spec, run, folder, threads)
        with open(os.path.join(folder, "options.json"), "w") as f:
            json.dump({"family": spec.family, "config": dict(run.config), "seed": run.seed,
                       "options": run.options, "argv": line}, f, indent=1)
        todo.append((run, line))
    return todo


def finished(folder):
    return os.path.exists(os.path.join(folder, "metrics.json"))


def train_run(folder, line, main):
    """The task: ``fmnumpy train`` of one run in this process (``main``, the command line's),
    continued with --resume when its folder holds a checkpoint; returns its metrics.  Raises
    with the command's one line when it fails (Dask retries it)."""
    if finished(folder):
        return _read_metrics(folder)
    if os.path.exists(os.path.join(folder, "checkpoint.npz")) or glob.glob(
            os.path.join(folder, "*", "checkpoint.npz")):      # (sbi's weight decays' runs)
        line = line + ["--resume"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(line)
    if code != 0:
        last = (err.getvalue().strip().splitlines() or [f"exit code {code}"])[-1]
        raise RuntimeError(f"{os.path.basename(folder)}: {last}")
    return _read_metrics(folder)


def _processing(client):
    """How many tasks the scheduler's workers are running now: of the tasks each worker
    holds, at most as many as it has threads."""
    try:
        threads = client.nthreads()
        return sum(min(len(keys), threads.get(w, 1))
                   for w, keys in client.processing().items())
    except Exception:            # a scheduler gone mid-sweep: the count is only progress
        return 0


def _read_metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def client_for(scheduler, workers, threads):
    """A Dask client: on ``scheduler`` (an address) if given, reached within CONNECT_S
    seconds or one line; else on a new LocalCluster of ``workers`` processes, one task each,
    with Numba's and BLAS's thread counts set to ``threads`` in every worker."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise FmnumpyError("fmnumpy sweep runs on Dask distributed: pip install "
                           "'fmnumpy[sweep]' (or 'dask[distributed]')") from None
    if scheduler:
        try:
            return Client(scheduler, timeout=f"{CONNECT_S}s"), None
        except (OSError, TimeoutError) as e:
            raise FmnumpyError(f"no Dask scheduler answered at {scheduler} within {CONNECT_S} "
                               f"s ({type(e).__name__}); start one with `dask scheduler` or "
                               "drop --scheduler for a local cluster") from None
    env = {k: str(threads) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                     "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                           dashboard_address=":0", env=env, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def run_sweep(spec, out, main, scheduler=None, workers=2, threads=1, say=print):
    """Run every unfinished run of ``spec`` into ``out`` with the command line's ``main``;
    returns (done, failed) counts.
    Progress lines go to ``say``: runs done, running and failed, and the dashboard."""
    from fmnumpy.errors import positive_int
    workers = positive_int("--workers", workers)
    threads = positive_int("--threads-per-run", threads)
    check_folder(spec, out)
    client, cluster = None, None
    if not all(finished(run_folder(out, r)) for r in _spec.runs(spec)):
        client, cluster = client_for(scheduler, workers, threads)   # before writing anything
    try:
        todo = prepare(spec, out, threads)
        left = [(run, line) for run, line in todo if not finished(run_folder(out, run))]
        skipped = len(todo) - len(left)
        say(f"{len(todo)} runs: {skipped} finished before, {len(left)} to run")
        if not left:
            return len(todo), 0
        from dask.distributed import as_completed
        say(f"dashboard: {client.dashboard_link}")
        futures = [client.submit(train_run, run_folder(out, run), line, main,
                                 key=f"run-{run.key}", pure=False, retries=RETRIES)
                   for run, line in left]
        done, failed, t0 = skipped, 0, time.perf_counter()
        for fut in as_completed(futures):
            if fut.status == "finished":
                done += 1
            else:
                failed += 1
                say(f"failed: {fut.exception()}")
            waiting = sum(f.status == "pending" for f in futures)
            running = min(waiting, _processing(client))
            say(f"runs done {done}, running {running}, waiting {waiting - running}, failed "
                f"{failed} of {len(todo)} ({time.perf_counter() - t0:.0f} s)")
        return done, failed
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
