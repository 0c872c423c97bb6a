"""CPU throughput: fmnumpy against the plain-PyTorch reference (bench/README.md, Workloads).

    python -m bench cpu [--threads 1 2] [--quick] [--out bench/results]

Every (workload, thread count) gets two fresh children, one per library, started
with NUMBA_NUM_THREADS = OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = n
(and torch.set_num_threads(n)); only one of them computes at any time, and timed runs
alternate fmnumpy, PyTorch, fmnumpy, ... so that drift of a shared machine hits both.
Before timing, a separate child checks that both compute the same loss, gradient,
first Adam steps and samples; a workload that fails this is not timed.
Writes cpu.json (every raw number), cpu.md (tables) and cpu.png (ratios).
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time

from . import common as C

# ==== children: one role each; heavy imports happen inside them ========================


def _spec_theta(model, seed):
    """MLPSpec and the initial weights FlowMatcher(seed=seed) starts from."""
    import numpy as np
    from fmnumpy.euclidean.estimator import INIT_STREAM
    from fmnumpy.nn.mlp import MLPSpec, init_params
    m = C.MODELS[model]
    spec = MLPSpec(2, m["hidden"], m["activation"])
    return spec, init_params(spec.sizes, np.random.default_rng([seed, INIT_STREAM]), np.float32)


def _stream(batch, seed):
    """fmnumpy's training-data stream, the one FlowMatcher.fit builds."""
    import numpy as np
    from fmnumpy.euclidean import datasets, stream as train
    return train.BatchStream(datasets.make_sampler(C.DATASET), 2, batch, seed, np.float32)


class OursTrain:
    """fmnumpy's real training path: FlowMatcher.fit for the first step (state and
    JIT), then fmnumpy.train.loop.run (the loop fit runs) over a persistent stream."""

    def __init__(self, model, batch, threads, seed=0):
        from fmnumpy import FlowMatcher
        self.batch = batch
        self.fm = FlowMatcher(**C.fm_options(model, seed, threads))
        self.stream, self.stepper = _stream(batch, seed), None

    def _steps(self, n):
        if self.stepper is None:                     # after fit has set up the state
            self.stepper = self.fm._stepper(self.stream, self.batch)
        self.fm._run(self.stepper, self.stream, C.TOTAL_STEPS, until=self.fm.step_ + n)
        return self.fm.losses_[-1]

    def setup(self, warmup):
        t0 = time.perf_counter()
        self.fm.fit(C.DATASET, steps=C.TOTAL_STEPS, batch_size=self.batch, until=1)
        first = time.perf_counter() - t0
        self._steps(warmup)
        return dict(first_call_s=first, threads=C.thread_report(), memory=C.memory_report())

    def run(self, steps):
        c0, t0 = time.process_time(), time.perf_counter()
        loss = self._steps(steps)
        return dict(seconds=time.perf_counter() - t0, cpu_s=time.process_time() - c0, loss=loss)

    def finish(self):
        return C.memory_report()


class RefTrain(OursTrain):
    """The PyTorch reference on the same weights and the same data stream."""

    def __init__(self, model, batch, threads, seed=0):
        import torch
        torch.set_num_threads(threads)
        from . import torch_ref as R
        spec, theta = _spec_theta(model, seed)
        self.trainer = R.Trainer(R.build_model(spec.sizes, spec.activation, theta), C.LR,
                                 C.BETAS, C.EPS)
        self.stream, self.k = _stream(batch, seed), 0

    def _steps(self, n):
        for _ in range(n):
            loss = self.trainer.step(*self.stream.batch_at(self.k))
            self.k += 1
        return float(loss)

    def setup(self, warmup):
        t0 = time.perf_counter()
        self._steps(1)
        first = time.perf_counter() - t0
        self._steps(warmup)
        return dict(first_call_s=first, threads=C.thread_report(), memory=C.memory_report(),
                    adam=str(self.trainer.opt.defaults))


class OursSample:
    """fmnumpy.solvers.integrate_mlp on N(0, I) particles, initial weights."""

    def __init__(self, model, particles, threads, seed=0):
        import numpy as np
        from fmnumpy.euclidean.integrate import integrate_mlp
        self.integrate = integrate_mlp
        self.spec, self.theta = _spec_theta(model, seed)
        rng = np.random.default_rng([seed, 7])
        self.x0 = rng.standard_normal((particles, 2)).astype(np.float32)      # (N, D)

    def _solve(self, x0, method, steps):
        return self.integrate(self.theta, self.spec, x0, method, steps)

    def setup(self):
        t0 = time.perf_counter()
        self._solve(self.x0[:64], "rk4", 1)
        return dict(first_call_s=time.perf_counter() - t0, threads=C.thread_report())

    def run(self, method, steps):
        c0, t0 = time.process_time(), time.perf_counter()
        self._solve(self.x0, method, steps)
        return dict(seconds=time.perf_counter() - t0, cpu_s=time.process_time() - c0)

    def finish(self):
        return C.memory_report()


class RefSample(OursSample):
    def __init__(self, model, particles, threads, seed=0):
        import torch
        torch.set_num_threads(threads)
        from . import torch_ref as R
        OursSample.__init__(self, model, particles, threads, seed)
        self.model = R.build_model(self.spec.sizes, self.spec.activation, self.theta)
        self.x0 = torch.from_numpy(self.x0)
        self.integrate = lambda theta, spec, x0, method, steps: R.integrate(self.model, x0,
                                                                            method, steps)


class Validate:
    """fmnumpy against PyTorch on identical weights and data, before any timing."""

    def __init__(self, model, threads, seed=0):
        import torch
        torch.set_num_threads(threads)
        self.model, self.seed = model, seed

    def train(self, batch):
        import numpy as np
        import torch
        from fmnumpy import FlowMatcher
        from fmnumpy.nn.mlp import Workspace
        from fmnumpy.euclidean.paths import STRAIGHT
        from fmnumpy.euclidean.step import loss_and_grad
        from fmnumpy.euclidean.stream import NO_LABELS
        from . import torch_ref as R
        spec, theta = _spec_theta(self.model, self.seed)
        x0, x1, t = _stream(batch, self.seed).batch_at(0)
        # one loss and gradient: fmnumpy, PyTorch float32, PyTorch float64 (context)
        ws, dtheta = Workspace(spec.sizes, batch), np.zeros_like(theta)
        xt, ut, dv = (np.zeros_like(x0) for _ in range(3))             # (B, D)
        no_eps = np.zeros((0, x0.shape[1]), x0.dtype)                  # the straight path
        loss = float(loss_and_grad(theta, dtheta, (spec.sizes, spec.kind, spec.feats),
                                   (STRAIGHT, 0.0), (x0, x1, t, no_eps, NO_LABELS),
                                   (xt, ut, dv) + ws.buffers()))
        ref = R.build_model(spec.sizes, spec.activation, theta)
        loss32, g32 = R.loss_and_grad(ref, x0, x1, t)
        ref64 = R.build_model(spec.sizes, spec.activation, theta.astype(np.float64),
                              dtype=torch.float64)
        loss64, g64 = R.loss_and_grad(ref64, *(a.astype(np.float64) for a in (x0, x1, t)))
        gscale = float(np.abs(g32).max())
        out = dict(loss_fmnumpy=loss, loss_torch=loss32, loss_torch64=loss64,
                   loss_rel_err=abs(loss - loss32) / abs(loss32),
                   grad_err=float(np.abs(dtheta - g32).max()) / gscale,
                   grad_err_fmnumpy_vs_f64=float(np.abs(dtheta - g64).max()) / gscale,
                   grad_err_torch_vs_f64=float(np.abs(g32 - g64).max()) / gscale)
        # the first Adam steps of the real training path against torch.optim.Adam
        fm = FlowMatcher(**C.fm_options(self.model, self.seed, None))
        fm.fit(C.DATASET, steps=C.TOTAL_STEPS, batch_size=batch, until=0)
        trainer = R.Trainer(R.build_model(spec.sizes, spec.activation, fm.theta_), C.LR,
                            C.BETAS, C.EPS)
        fm.fit(C.DATASET, steps=C.TOTAL_STEPS, batch_size=batch, warm_start=True,
               until=C.TRAJ_STEPS)
        stream = _stream(batch, self.seed)
        traj = [float(trainer.step(*stream.batch_at(k))) for k in range(C.TRAJ_STEPS)]
        out.update(traj_fmnumpy=list(fm.losses_), traj_torch=traj,
                   traj_rel_err=max(abs(a - b) / abs(b) for a, b in zip(fm.losses_, traj)))
        problems = [f"{k} {out[k]:.2e} > {tol:.0e}" for k, tol in
                    (("loss_rel_err", C.LOSS_RTOL), ("grad_err", C.GRAD_TOL),
                     ("traj_rel_err", C.TRAJ_RTOL)) if not out[k] <= tol]
        return dict(out, ok=not problems, problems=problems)

    def sample(self, particles):
        import numpy as np
        import torch
        from fmnumpy.euclidean.integrate import integrate_mlp
        from . import torch_ref as R
        spec, theta = _spec_theta(self.model, self.seed)
        rng = np.random.default_rng([self.seed, 8])
        x0 = rng.standard_normal((particles, 2)).astype(np.float32)          # (N, D)
        ref = R.build_model(spec.sizes, spec.activation, theta)
        out, problems = {}, []
        for method, steps in C.SAMPLE_METHODS:
            xa = integrate_mlp(theta, spec, x0, method, steps)
            xb = R.integrate(ref, torch.from_numpy(x0), method, steps).numpy()
            err = float(np.abs(xa - xb).max()) / max(1.0, float(np.abs(xb).max()))
            out[f"{method}_err"] = err
            if not err <= C.SAMPLE_TOL:
                problems.append(f"{method} samples differ by {err:.2e} > {C.SAMPLE_TOL:.0e}")
        return dict(out, ok=not problems, problems=problems)


class Peak:
    """Float32 matrix-product rate with this process's pinned threads, best of reps."""

    def __init__(self, threads):
        self.threads = threads

    def measure(self, n, reps):
        import numpy as np
        import torch
        from numba import njit
        torch.set_num_threads(self.threads)
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        c = np.empty((n, n), np.float32)
        dot = njit(lambda a, b, c: np.dot(a, b, c))          # SciPy's BLAS: what fmnumpy calls
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        kernels = {"numpy": lambda: np.matmul(a, b, out=c), "numba_np_dot": lambda: dot(a, b, c),
                   "torch": lambda: torch.mm(ta, tb, out=tc)}
        out = {}
        for name, f in kernels.items():
            f()                                               # warm-up (and JIT)
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                f()
                best = min(best, time.perf_counter() - t0)
            out[name] = 2.0 * n ** 3 / best / 1e9
        return dict(gflops=out, peak_gflops=max(out.values()), n=n, reps=reps,
                    threads=C.thread_report())


class ColdJit:
    """JIT compile time with an empty Numba cache (the parent points NUMBA_CACHE_DIR at
    a fresh folder): the first training step and the first sampler call."""

    def __init__(self, seed=0):
        t0 = time.perf_counter()
        import fmnumpy                                        # noqa: F401
        self.import_s, self.seed = time.perf_counter() - t0, seed

    def measure(self):
        from fmnumpy import FlowMatcher
        fm = FlowMatcher(**C.fm_options("A", self.seed, None))
        t0 = time.perf_counter()
        fm.fit(C.DATASET, steps=2, batch_size=256, until=1)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fm.fit(C.DATASET, steps=2, batch_size=256, warm_start=True)
        step_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fm.sample(64, method="rk4", steps=1)
        sample_s = time.perf_counter() - t0
        return dict(import_s=self.import_s, first_train_step_s=train_s, second_step_s=step_s,
                    first_sample_s=sample_s, cache_dir=os.environ.get("NUMBA_CACHE_DIR"))


ROLES = {cls.__name__: cls for cls in (OursTrain, RefTrain, OursSample, RefSample, Validate,
                                       Peak, ColdJit)}

# ==== parent: schedule children, collect, report =======================================


class Bench:
    def __init__(self, args):
        self.args, self.reps = args, (C.QUICK if args.quick else C.FULL)
        os.makedirs(args.out, exist_ok=True)
        self.log = os.path.join(args.out, "cpu.log")
        open(self.log, "w").close()
        self.validated = {}
        self.res = dict(machine=C.machine_info(), quick=args.quick, threads=args.threads,
                        repetitions=self.reps, data_source="fmnumpy.train.BatchStream (both)",
                        jit=None, peak={}, train=[], sample=[])

    def worker(self, role, n_threads, extra_env=None, **config):
        """A child playing ``role`` with every thread pool pinned to ``n_threads``."""
        return C.Worker("bench.cpu", role, config, n_threads, self.log, extra_env)

    def save(self):
        C.write_json(os.path.join(self.args.out, "cpu.json"), self.res)

    def guarded(self, what, fn, rec):
        """Run one workload; a failure is recorded and the others go on."""
        say(f"{what} ...")
        rec["load_avg_before"] = os.getloadavg()
        t0 = time.perf_counter()
        try:
            fn(rec)
        except Exception as e:                                # noqa: BLE001
            rec["error"] = f"{type(e).__name__}: {e}"
            say(f"  FAILED: {C.error_summary(rec['error'])}")
        rec["wall_s"] = time.perf_counter() - t0
        self.save()
        return rec

    def validation(self, key, threads, method, **kw):
        """The validation record of a workload, run once; raises if it failed.  A
        mismatch is remembered for the other thread counts, a crash is retried."""
        v = self.validated.get(key)
        if v is None:
            try:
                with self.worker("Validate", threads, model=key[1], threads=threads) as w:
                    v = self.validated[key] = w.call(method, **kw)
            except C.WorkerError as e:
                v = dict(ok=False, problems=[f"validation crashed: {e}"])
        if not v["ok"]:
            raise RuntimeError("validation failed: " + "; ".join(v["problems"]))
        return v

    def cold_jit(self, rec):
        with tempfile.TemporaryDirectory(prefix="fm-numba-cache-") as d:
            with self.worker("ColdJit", 1, {"NUMBA_CACHE_DIR": d}) as w:
                rec.update(w.call("measure"))
        say(f"  cold JIT: first training step {rec['first_train_step_s']:.1f} s, "
            f"first sample {rec['first_sample_s']:.1f} s")

    def peak(self, n, rec):
        with self.worker("Peak", n, threads=n) as w:
            rec.update(w.call("measure", n=self.reps["peak_n"], reps=self.reps["peak_reps"]))
        say("  " + ", ".join(f"{k} {v:.1f}" for k, v in rec["gflops"].items()) + " GFLOP/s")

    def train(self, model, batch, n, rec):
        R = self.reps
        rec["validation"] = self.validation(("train", model, batch), n, "train", batch=batch)
        cfg = dict(model=model, batch=batch, threads=n)
        runs = {"fmnumpy": [], "pytorch": []}
        with self.worker("OursTrain", n, **cfg) as ours:
            rec["fmnumpy_setup"] = dict(ours.call("setup", warmup=R["train_warmup"]),
                                        ready=ours.ready)
            with self.worker("RefTrain", n, **cfg) as ref:
                rec["pytorch_setup"] = dict(ref.call("setup", warmup=R["train_warmup"]),
                                            ready=ref.ready)
                for _ in range(R["train_runs"]):
                    for name, w in (("fmnumpy", ours), ("pytorch", ref)):
                        time.sleep(C.PAUSE_S)
                        runs[name].append(w.call("run", steps=R["train_steps"]))
                rec["pytorch_memory"] = ref.call("finish")
            rec["fmnumpy_memory"] = ours.call("finish")
        flops = C.train_flops(C.MODELS[model]["params"], batch)
        peak = self.res["peak"].get(str(n), {}).get("peak_gflops")
        for name, rs in runs.items():
            rate = C.median([R["train_steps"] / r["seconds"] for r in rs])
            rec[name] = dict(seconds=[r["seconds"] for r in rs], steps_per_s=rate,
                             gflops=rate * flops / 1e9,
                             peak_fraction=C.ratio(rate * flops / 1e9, peak),
                             cpu_per_wall=C.median([r["cpu_s"] / r["seconds"] for r in rs]),
                             last_loss=rs[-1]["loss"])
        times = {name: rec[name]["seconds"] for name in runs}
        rec["ratio"] = C.ratio(rec["fmnumpy"]["steps_per_s"], rec["pytorch"]["steps_per_s"])
        rec["paired_ratio"] = C.median([b / a for a, b in zip(times["fmnumpy"], times["pytorch"])])
        say(f"  fmnumpy {rec['fmnumpy']['steps_per_s']:.1f} steps/s, PyTorch "
            f"{rec['pytorch']['steps_per_s']:.1f} steps/s, ratio {rec['ratio']:.2f}")

    def sample(self, model, n, recs):
        R = self.reps
        v = self.validation(("sample", model), n, "sample", particles=C.VALIDATE_PARTICLES)
        cfg = dict(model=model, particles=R["particles"], threads=n)
        with self.worker("OursSample", n, **cfg) as ours:
            setup_fm = dict(ours.call("setup"), ready=ours.ready)
            with self.worker("RefSample", n, **cfg) as ref:
                setup_pt = dict(ref.call("setup"), ready=ref.ready)
                for rec in recs:
                    rec.update(validation=v, fmnumpy_setup=setup_fm, pytorch_setup=setup_pt)
                    runs = {"fmnumpy": [], "pytorch": []}
                    call = dict(method=rec["method"], steps=rec["steps"])
                    for w in (ours, ref):
                        for _ in range(R["sample_warmup"]):
                            w.call("run", **call)
                    for _ in range(R["sample_runs"]):
                        for name, w in (("fmnumpy", ours), ("pytorch", ref)):
                            time.sleep(C.PAUSE_S)
                            runs[name].append(w.call("run", **call))
                    evals = R["particles"] * rec["steps"] * C.STAGES[rec["method"]]
                    for name, rs in runs.items():
                        rate = C.median([evals / r["seconds"] for r in rs])
                        rec[name] = dict(seconds=[r["seconds"] for r in rs], evals_per_s=rate,
                                         gflops=rate * C.sample_flops(
                                             C.MODELS[model]["params"]) / 1e9,
                                         cpu_per_wall=C.median([r["cpu_s"] / r["seconds"]
                                                                for r in rs]))
                    rec["ratio"] = C.ratio(rec["fmnumpy"]["evals_per_s"],
                                           rec["pytorch"]["evals_per_s"])
                    say(f"  {rec['method']}: fmnumpy {rec['fmnumpy']['evals_per_s']:.3g}, "
                        f"PyTorch {rec['pytorch']['evals_per_s']:.3g} particle-evals/s, "
                        f"ratio {rec['ratio']:.2f}")

    def sample_guarded(self, model, n):
        recs = [dict(model=model, method=m, steps=s, threads=n, particles=self.reps["particles"])
                for m, s in C.SAMPLE_METHODS]
        self.res["sample"] += recs
        holder = {}
        self.guarded(f"sample {model}, {n} thread(s)", lambda r: self.sample(model, n, recs),
                     holder)
        for rec in recs:
            rec.update({k: v for k, v in holder.items() if k in ("error", "wall_s")})
        self.save()

    def run(self):
        parts = self.args.parts
        if "jit" in parts:
            self.res["jit"] = self.guarded("cold JIT compile", self.cold_jit, {})
        for n in self.args.threads:
            if "peak" in parts:
                self.res["peak"][str(n)] = self.guarded(f"matmul peak, {n} thread(s)",
                                                        lambda r: self.peak(n, r), {})
            if "train" in parts:
                for model, batch in C.TRAIN_CPU:
                    rec = dict(model=model, batch=batch, threads=n,
                               params=C.MODELS[model]["params"])
                    self.res["train"].append(rec)
                    self.guarded(f"train {model}, batch {batch}, {n} thread(s)",
                                 lambda r: self.train(model, batch, n, r), rec)
            if "sample" in parts:
                for model in C.SAMPLE_MODELS:
                    self.sample_guarded(model, n)
        self.res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.save()
        title = "fmnumpy vs PyTorch on the CPU"
        for path in C.write_reports(self.res, self.args.out, "cpu", title):
            say(f"wrote {path}")


def say(msg):
    print(msg, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench cpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true",
                    help="few repetitions and 2,000 particles: a smoke run, not a measurement")
    ap.add_argument("--out", default=os.path.join(C.REPO, "bench", "results"))
    ap.add_argument("--parts", nargs="+", default=["jit", "peak", "train", "sample"],
                    choices=["jit", "peak", "train", "sample"])
    args = ap.parse_args(argv)
    if min(args.threads) < 1:
        ap.error("--threads must be positive")
    if importlib.util.find_spec("torch") is None:     # imported only by the children
        ap.error("PyTorch is needed for the reference: pip install '.[bench]'")
    Bench(args).run()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(C.serve(ROLES, sys.argv[2:]))
    sys.exit(main())
