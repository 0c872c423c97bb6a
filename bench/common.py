"""Plumbing shared by the benchmarks: the constants of ``bench/README.md`` (Workloads),
thread pinning, child processes that serve timing commands, the machine's
description, statistics and report helpers.

This module imports only the standard library at load time: the parent process
decides the thread counts, and a child must get them through its environment
before numpy, numba or torch is first imported.
"""
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import time
import traceback
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- the workloads (bench/README.md, Workloads) ----------------------------------------------

DATASET = "2spirals"
MODELS = {                                   # input concat(x, t): 3 numbers; output 2
    "A": dict(hidden=(64, 64, 64), activation="selu", params=8706),
    "B": dict(hidden=(256, 256, 256), activation="silu", params=133122),
}
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8   # Adam, no weight decay, no schedule
TRAIN_CPU = (("A", 256), ("B", 256), ("B", 4096))
SAMPLE_MODELS = ("B", "A")
SAMPLE_METHODS = (("euler", 100), ("rk4", 25))  # 100 velocity evaluations each
STAGES = {"euler": 1, "rk4": 4}

# Repetitions: full = the workloads of bench/README.md; quick = a smoke run whose numbers mean nothing.
FULL = dict(train_warmup=50, train_runs=7, train_steps=200, particles=10_000,
            sample_warmup=1, sample_runs=3, peak_n=2048, peak_reps=10)
QUICK = dict(train_warmup=5, train_runs=3, train_steps=20, particles=2_000,
             sample_warmup=1, sample_runs=2, peak_n=1024, peak_reps=3)

TOTAL_STEPS = 10 ** 9      # the schedule length given to fmnumpy; constant lr ignores it
PAUSE_S = 0.25             # between timed runs: lets idle BLAS/OpenMP threads stop spinning
CALL_TIMEOUT_S = 1800      # one child command (a cold JIT compile on a busy machine is slow)

# Validation tolerances (float32 against float32, same weights and batch).
LOSS_RTOL = 1e-5           # |L_fm - L_torch| / L_torch
GRAD_TOL = 1e-4            # max |g_fm - g_torch| / max |g_torch|
TRAJ_RTOL = 1e-4           # losses of the first TRAJ_STEPS Adam steps
TRAJ_STEPS = 5
SAMPLE_TOL = 1e-4          # max |x_fm - x_torch| / max(1, max |x_torch|)
VALIDATE_PARTICLES = 2_000
STARVED = 0.8              # CPU s per wall s below which a timed child was not running alone


def train_flops(params, batch):
    """FLOPs of one training step: 3 x 2 x parameters x batch (forward + backward)."""
    return 6 * params * batch


def sample_flops(params):
    """FLOPs of one velocity evaluation of one particle: 2 x parameters."""
    return 2 * params


def fm_options(model, seed, threads):
    """FlowMatcher keyword arguments that realise the workload: plain Adam, constant lr,
    no clipping, no warm-up, no weight decay, t ~ U(0, 1)."""
    m = MODELS[model]
    return dict(hidden=m["hidden"], activation=m["activation"], x_freqs=0,   # concat(x, t)
                lr=LR, optimizer="adam",
                weight_decay=0.0, clip=0.0, warmup=0, schedule="constant", time_power=1.0,
                seed=seed, threads=threads)


# ---- threads, memory, machine ---------------------------------------------------------

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")


def pinned_env(threads, extra=None):
    """The environment of a child that must use ``threads`` threads everywhere."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(int(threads))
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def thread_report():
    """What the thread pools of this process really are (checks the pinning)."""
    out = {var: os.environ.get(var) for var in THREAD_VARS}
    if "numba" in sys.modules:
        out["numba"] = sys.modules["numba"].get_num_threads()
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    try:
        from threadpoolctl import threadpool_info
        out["pools"] = [dict(api=p.get("internal_api"), threads=p.get("num_threads"),
                             lib=os.path.basename(p.get("filepath", "")))
                        for p in threadpool_info()]
    except ImportError:
        pass
    return out


def memory_report():
    """Peak resident memory of this process (ru_maxrss) and its current RSS, MiB."""
    import resource
    rep = {"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rep["rss_mib"] = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return rep


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    m = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else platform.machine()


def cpu_detail():
    """Family/model/stepping and the SIMD flags of /proc/cpuinfo (the model name of a
    virtual machine is often just the vendor's)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    simd = [f for f in fields.get("flags", "").split() if re.match(r"(avx|fma|amx|sse4)", f)]
    out = {k: fields.get(k) for k in ("vendor_id", "cpu family", "model", "stepping", "cpu MHz",
                                      "cache size")}
    out["simd"] = " ".join(simd)
    return out


def versions(names=("numpy", "numba", "scipy", "torch", "threadpoolctl")):
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info():
    return dict(cpu=cpu_model(), cpu_detail=cpu_detail(), logical_cpus=os.cpu_count(),
                affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                platform=platform.platform(), load_avg=os.getloadavg(), versions=versions(),
                started=time.strftime("%Y-%m-%d %H:%M:%S"))


# ---- statistics and reports -----------------------------------------------------------

def error_summary(text):
    """One line of an error that may hold a child's traceback: what failed, and why."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return "error"
    head = lines[0].split("Traceback")[0].strip()
    return head if len(lines) == 1 else f"{head} ... {lines[-1]}"


def median(xs):
    return float(statistics.median(xs)) if xs else None


def ratio(a, b):
    return a / b if a and b else None


def fmt(x, digits=3):
    """A number for a table: 3 significant digits, whole numbers from 1,000 up."""
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def train_label(rec):
    return f"train {rec['model']}/{rec['batch']}"


def sample_label(rec):
    return f"sample {rec['model']} {rec['method']}-{rec['steps']}"


def _get(rec, *keys):
    for k in keys:
        rec = rec.get(k) if isinstance(rec, dict) else None
    return rec


def _mem(rec, name):
    peak = _get(rec, name + "_memory", "maxrss_mib")
    base = _get(rec, name + "_setup", "ready", "memory_after_import", "rss_mib")
    return f"{fmt(peak)} ({fmt(base)})"


def _sci(x):
    return "n/a" if x is None else f"{x:.1e}"


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report_markdown(res, title):
    """The tables of a result dict (see bench/README.md for the fields)."""
    m = res["machine"]
    out = [f"# {title}", ""]
    if res.get("quick"):
        out += ["**QUICK SMOKE RUN: too few repetitions to mean anything.**", ""]
    d = m.get("cpu_detail", {})
    out += [f"{m['cpu']} (family {d.get('cpu family')} model {d.get('model')}), "
            f"{m['logical_cpus']} logical CPUs, load average at start "
            f"{', '.join(f'{x:.2f}' for x in m['load_avg'])}; started {m['started']}.  "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".", ""]
    peaks = res.get("peak", {})
    if peaks:
        names = sorted({k for p in peaks.values() for k in p.get("gflops", {})})
        out += ["## Float32 matrix-product peak (GFLOP/s, best of several)", "",
                markdown_table(["threads"] + names + ["peak"], [
                    [n] + [fmt(_get(p, "gflops", k)) for k in names] + [fmt(p.get("peak_gflops"))]
                    for n, p in peaks.items()]), ""]
    rows, extra = [], []
    for r in res.get("train", []):
        if "error" in r:
            rows.append([train_label(r), r["threads"], "failed", error_summary(r["error"]),
                         "", "", ""])
            continue
        f, p = r["fmnumpy"], r["pytorch"]
        rows.append([train_label(r), r["threads"], fmt(p["steps_per_s"]), fmt(f["steps_per_s"]),
                     fmt(r["ratio"]), fmt(f["gflops"]), _pct(f["peak_fraction"])])
        extra.append([train_label(r), r["threads"], fmt(r["paired_ratio"]),
                      f"{fmt(p.get('cpu_per_wall'))} / {fmt(f.get('cpu_per_wall'))}",
                      fmt(_get(r, "fmnumpy_setup", "first_call_s")),
                      fmt(_get(r, "pytorch_setup", "first_call_s")),
                      _mem(r, "fmnumpy"), _mem(r, "pytorch"),
                      _sci(_get(r, "validation", "grad_err"))])
    if rows:
        out += ["## Training (steps/s, median)", "",
                markdown_table(["workload", "threads", "PyTorch", "fmnumpy", "ratio",
                                "GFLOP/s", "% of peak"], rows), "",
                "ratio = fmnumpy / PyTorch (above 1: fmnumpy is faster); GFLOP/s "
                "(3 x 2 x parameters x batch x steps/s) and % of peak are fmnumpy's.", ""]
    if extra:
        out += [markdown_table(["workload", "threads", "paired ratio",
                                "CPU/wall PyTorch / fmnumpy", "fmnumpy first call s",
                                "PyTorch first call s", "fmnumpy peak RSS MiB (after import)",
                                "PyTorch peak RSS MiB (after import)", "grad err"], extra), "",
                "CPU/wall: the child's CPU seconds per wall second in the timed runs; on an "
                "idle machine about the thread count (spinning threads count too), far "
                "below it when the run was starved.  Both children import numpy, numba and "
                "fmnumpy; the PyTorch child also torch.", ""]
    rows = []
    for r in res.get("sample", []):
        peak = _get(peaks, str(r["threads"]), "peak_gflops")
        if "error" in r or "fmnumpy" not in r:
            rows.append([sample_label(r), r["threads"], "failed",
                         error_summary(r.get("error", "not run")), "", "", ""])
            continue
        f, p = r["fmnumpy"], r["pytorch"]
        rows.append([sample_label(r), r["threads"], fmt(p["evals_per_s"]), fmt(f["evals_per_s"]),
                     fmt(r["ratio"]), fmt(f["gflops"]), _pct(ratio(f["gflops"], peak))])
    if rows:
        n = res["sample"][0]["particles"]
        out += [f"## Sampling ({n:,} particles; particle-evaluations/s, median)", "",
                markdown_table(["workload", "threads", "PyTorch", "fmnumpy", "ratio",
                                "GFLOP/s", "% of peak"], rows), "",
                "GFLOP/s = 2 x parameters x particle-evaluations/s, fmnumpy's.", ""]
    starved = [f"{label(r)} ({r['threads']} thread(s))" for label, key in
               ((train_label, "train"), (sample_label, "sample")) for r in res.get(key, [])
               if any((_get(r, name, "cpu_per_wall") or STARVED) < STARVED
                      for name in ("fmnumpy", "pytorch"))]
    if starved:
        out += [f"**Starved runs** (a child got less than {STARVED} CPU seconds per wall "
                "second: other processes shared the cores; do not trust these): "
                + "; ".join(starved) + ".", ""]
    jit = res.get("jit") or {}
    if "first_train_step_s" in jit:
        out += [f"Cold JIT (empty Numba cache): import {jit['import_s']:.1f} s, first "
                f"training step {jit['first_train_step_s']:.1f} s, first sampler call "
                f"{jit['first_sample_s']:.1f} s.  The \"first call\" columns above are with "
                "the on-disk cache warm.", ""]
    return "\n".join(out)


def report_chart(res, path, title):
    """Bars of the ratio fmnumpy / PyTorch, one group per workload, one bar per thread count."""
    from fmnumpy.plots.euclidean import bar_chart
    recs = [(train_label(r), r) for r in res.get("train", [])]
    recs += [(sample_label(r), r) for r in res.get("sample", [])]
    labels = list(dict.fromkeys(lab for lab, _ in recs))
    series = {}
    for n in res["threads"]:
        name = f"{n} thread" + ("s" if n > 1 else "")
        vals = {lab: r.get("ratio") for lab, r in recs if r["threads"] == n}
        series[name] = [vals.get(lab) if vals.get(lab) is not None else float("nan")
                        for lab in labels]
    return bar_chart(path, labels, series, "fmnumpy / PyTorch throughput", title)


def write_reports(res, out, name, title):
    """NAME.md and NAME.png in ``out``; returns the paths written."""
    written = []
    path = os.path.join(out, name + ".md")
    with open(path, "w") as f:
        f.write(report_markdown(res, title))
    written.append(path)
    try:
        path = os.path.join(out, name + ".png")
        report_chart(res, path, title + (" (QUICK smoke run)" if res.get("quick") else ""))
        written.append(path)
    except Exception as e:                                    # noqa: BLE001
        print(f"no chart: {type(e).__name__}: {e}", file=sys.stderr)
    return written


# ---- child processes ------------------------------------------------------------------

class WorkerError(RuntimeError):
    pass


class Worker:
    """A child ``python -m MODULE --worker ROLE CONFIG`` with pinned threads.

    The child builds ``ROLE(**CONFIG)`` (imports included), says it is ready, then
    answers one JSON line per command: ``call("run", steps=200)`` calls the role's
    ``run(steps=200)``.  Starting waits for the ready line, so two children never
    import or compute at the same time.  The child's stderr goes to ``log``.
    """

    def __init__(self, module, role, config, threads, log, extra_env=None,
                 timeout=CALL_TIMEOUT_S):
        self.role, self.log = role, log
        self._log = open(log, "a")
        self._log.write(f"\n=== {role} {json.dumps(config)} threads={threads}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--worker", role, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO,
            env=pinned_env(threads, extra_env), text=True, bufsize=1)
        self.ready = self._read(timeout)

    def call(self, cmd, timeout=CALL_TIMEOUT_S, **args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def _read(self, timeout):
        fd = self.proc.stdout
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            self.kill()
            raise WorkerError(f"{self.role}: no answer within {timeout:.0f} s")
        line = fd.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise WorkerError(f"{self.role}: the child exited (code {self.proc.returncode}); "
                              f"see {self.log}:\n{self.tail()}")
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(f"{self.role}: {msg['error']}")
        return msg

    def tail(self, n=15):
        self._log.flush()
        with open(self.log) as f:
            return "".join(f.readlines()[-n:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(roles, argv):
    """Child side of :class:`Worker`: ``argv`` = [ROLE, CONFIG-JSON]."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                 # stray prints (Python or C) go to the log, not the protocol
    sys.stdout = sys.stderr

    def answer(obj):
        proto.write(json.dumps(obj, default=_jsonable) + "\n")

    role, config = argv[0], json.loads(argv[1])
    try:
        t0 = time.perf_counter()
        obj = roles[role](**config)
        answer({"ready": True, "construct_s": time.perf_counter() - t0,
                "memory_after_import": memory_report()})
    except Exception:
        answer({"error": traceback.format_exc(limit=6)})
        return 1
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            answer(getattr(obj, msg["cmd"])(**msg.get("args", {})))
        except Exception:
            answer({"error": traceback.format_exc(limit=6)})
    return 0


def w2_nfe_axes(ax, title):
    """A panel of W2 / floor against network evaluations per sample: log x, the floor's
    line, labels (bench/sde.py, bench/flowmap.py)."""
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel("W2 / floor")
    ax.set_title(title)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")


# ---- grids of training runs, on fmnumpy's sweep (docs/sweeps.md) ------------------------------

def sweep_arguments(ap):
    """The options of a benchmark whose runs go through ``fmnumpy sweep``."""
    ap.add_argument("--workers", type=int, default=2,
                    help="Dask worker processes of a local cluster (default 2)")
    ap.add_argument("--threads-per-run", type=int, default=1,
                    help="threads of each run (default 1; the same count reproduces a run "
                         "bit for bit)")
    ap.add_argument("--scheduler", default=None, help="a running Dask scheduler's address")
    ap.add_argument("--sweep-dir", default=None,
                    help="the sweep's folder (default bench/runs/NAME-HASH of the spec); a "
                         "rerun skips finished runs and resumes interrupted ones")


def run_sweep(raw, name, a):
    """Train every run of the sweep spec ``raw`` (a dict, as the TOML would give) with
    ``fmnumpy sweep``'s machinery and the options of :func:`sweep_arguments`; returns
    [(run, its folder)] in the spec's order.  Each folder holds checkpoint.npz and
    metrics.json, so a benchmark scores the trained models by its own protocol."""
    import hashlib
    from fmnumpy.cli.main import sweep_cli
    from fmnumpy.sweep import execute, spec as sweep_spec, summary
    cli = sweep_cli()
    spec = sweep_spec.check_spec(raw, cli, f"bench/{name}.py's spec")
    out = a.sweep_dir or os.path.join(REPO, "bench", "runs", name + "-" + hashlib.sha1(
        json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12])
    print(f"sweep in {out} ({a.workers} workers x {a.threads_per_run} threads)", flush=True)
    done, failed = execute.run_sweep(spec, out, cli.main, a.scheduler, a.workers,
                                     a.threads_per_run,
                                     say=lambda s: print(s, file=sys.stderr, flush=True))
    if failed:
        raise SystemExit(f"{failed} runs failed; rerun to retry them (finished runs are kept)")
    summary.summarize(out, plot=False)
    return [(r, execute.run_folder(out, r)) for r in sweep_spec.runs(spec)]


def train_option(v):
    """A FlowMatcher option's value as a sweep spec gives it (tuples of widths as text)."""
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else v
