"""Likelihood throughput (bench/README.md, Workloads): ``log_prob`` of N points with RK4 25
steps against ``sample`` of N points with the same solver, and against a plain-PyTorch
exact divergence (autograd, one backward pass per data dimension) on the same weights
and points.

    python bench/likelihood.py [--threads 2] [-n 10000] [--checkpoint results/checkpoint.npz]
                               [--float64] [--out bench/results]

The model is the default one (``FlowMatcher`` defaults, its Fourier features of x
included), with the checkpoint's EMA weights or, without one, freshly initialised weights
(the cost of a fixed-step solve does not depend on the weights).  Before timing, the
two log-densities are compared on the first 1,000 points.  Then rounds of
(fmnumpy sample, fmnumpy log_prob, PyTorch log_prob[, fmnumpy float64 log_prob]),
alternated in this one process with a pause between runs, best of ``--runs``; writes
``likelihood.json`` and ``likelihood.md`` to ``--out``.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--float64", action="store_true",
                    help="also time the float64 oracle build (slow)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    return ap.parse_args(argv)


def torch_log_prob(model, x, steps):
    """log p_1(x) by RK4 from t = 1 back to 0 on [x, l] in float32, the divergence
    exact: one autograd backward pass per data dimension (what a PyTorch user writes).
    On x's device; returns a NumPy array."""
    import math

    import torch
    B, D = x.shape
    tcol = torch.empty(B, 1, dtype=x.dtype, device=x.device)

    def rate(x, t):
        tcol.fill_(t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = model(torch.cat([xg, tcol], dim=1))
            div = torch.zeros(B, dtype=x.dtype, device=x.device)
            for d in range(D):
                g, = torch.autograd.grad(v[:, d].sum(), xg, retain_graph=d < D - 1)
                div += g[:, d]
        return v.detach(), -div

    h = -1.0 / steps
    l = torch.zeros(B, dtype=x.dtype, device=x.device)
    for n in range(steps):
        t = 1.0 + n * h
        k1, m1 = rate(x, t)
        k2, m2 = rate(x + 0.5 * h * k1, t + 0.5 * h)
        k3, m3 = rate(x + 0.5 * h * k2, t + 0.5 * h)
        k4, m4 = rate(x + h * k3, t + h)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        l = l + (h / 6.0) * (m1 + 2 * m2 + 2 * m3 + m4)
    # l(0) = -int_1^0 div dt reversed: dl/dt = -div, so l(0) = int_0^1 div v dt
    logp0 = -0.5 * (x * x).sum(1) - 0.5 * D * math.log(2 * math.pi)
    return (logp0 - l).cpu().numpy()


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import numpy as np
    import torch

    from bench.common import PAUSE_S, fmt, machine_info, markdown_table, thread_report, \
        write_json
    from bench.torch_ref import build_model
    from fmnumpy import FlowMatcher
    from fmnumpy.euclidean import likelihood
    from fmnumpy.nn import mlp
    from fmnumpy.euclidean.estimator import DEFAULTS, X_FREQS
    from fmnumpy.euclidean.integrate import integrate_mlp

    torch.set_num_threads(a.threads)
    if a.checkpoint:
        fm = FlowMatcher.load(a.checkpoint)
        spec, theta, source = fm.spec_, fm.ema_.copy(), a.checkpoint
    else:
        spec = mlp.MLPSpec(2, DEFAULTS["hidden"], DEFAULTS["activation"], DEFAULTS["time_freqs"],
                           x_freqs=X_FREQS["cpu"] if DEFAULTS["x_freqs"] is None
                           else DEFAULTS["x_freqs"])
        theta, source = mlp.init_params(spec.sizes, np.random.default_rng(0)), "initial weights"
    model = build_model(spec.sizes, spec.activation, theta, x_freqs=spec.x_freqs)
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((a.n, spec.dim)).astype(np.float32)
    x = integrate_mlp(theta, spec, x0, "rk4", a.steps)           # points where the model puts mass

    def ours_sample():
        return integrate_mlp(theta, spec, x0, "rk4", a.steps)

    def ours_logp(dtype=np.float32):
        return likelihood.log_prob(theta, spec, x, "rk4", a.steps, dtype=dtype)

    def torch_logp():
        return torch_log_prob(model, torch.from_numpy(x.copy()), a.steps)

    # validation on 1,000 points: float32 build and PyTorch against the float64 oracle
    k = min(1000, a.n)
    ref = likelihood.log_prob(theta, spec, x[:k], "rk4", a.steps, dtype=np.float64)
    err32 = float(np.abs(likelihood.log_prob(theta, spec, x[:k], "rk4", a.steps) - ref).max())
    errt = float(np.abs(torch_log_prob(model, torch.from_numpy(x[:k].copy()), a.steps)
                        - ref).max())
    print(f"validation ({k} points, max |log p - float64 oracle|): fmnumpy float32 "
          f"{err32:.2e}, PyTorch float32 {errt:.2e}", flush=True)
    if err32 > 1e-3 or errt > 1e-3:
        raise SystemExit("validation failed: the builds disagree by more than 1e-3 nats")

    runs = {"fmnumpy sample": ours_sample, "fmnumpy log_prob": ours_logp,
            "PyTorch log_prob": torch_logp}
    if a.float64:
        runs["fmnumpy log_prob float64"] = lambda: ours_logp(np.float64)
    for f in runs.values():                                      # warm-up and compile
        f()
    times = {name: [] for name in runs}
    for r in range(a.runs):
        for name, f in runs.items():
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
            print(f"round {r + 1}: {name} {times[name][-1]:.3f} s", flush=True)
    best = {name: min(ts) for name, ts in times.items()}
    evals = a.n * a.steps * 4                                    # RK4: 4 evaluations a step
    res = dict(machine=machine_info(), threads=thread_report(), n=a.n, steps=a.steps,
               method="rk4", weights=source, hidden=[int(h) for h in spec.sizes[1:-1]], x_freqs=spec.x_freqs,
               activation=spec.activation, validation=dict(
                   points=k, fmnumpy_float32=err32, torch_float32=errt),
               times=times, best=best,
               ratio_logprob_to_sample=best["fmnumpy log_prob"] / best["fmnumpy sample"],
               speedup_over_torch=best["PyTorch log_prob"] / best["fmnumpy log_prob"])
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "likelihood.json"), res)
    rows = [[name, fmt(best[name]), fmt(evals / best[name] / 1e3),
             fmt(best[name] / best["fmnumpy sample"])] for name in runs]
    md = (f"# Likelihood throughput\n\n{a.n:,} points, RK4 {a.steps} steps, model "
          f"{res['hidden']} {res['activation']} x_freqs {spec.x_freqs} ({source}), {a.threads} threads, "
          f"best of {a.runs} alternated rounds; {res['machine']['cpu']}, "
          f"{res['machine']['started']}.\n\n"
          + markdown_table(["run", "best s", "k particle-evals/s", "x sample"], rows)
          + f"\n\nlog_prob / sample: {res['ratio_logprob_to_sample']:.2f}x; "
          f"fmnumpy log_prob is {res['speedup_over_torch']:.2f}x faster than PyTorch's.  "
          f"Validation on {k} points, max |log p - float64 oracle|: fmnumpy float32 "
          f"{err32:.1e}, PyTorch float32 {errt:.1e}.\n\nCommand: `python bench/likelihood.py "
          + " ".join(sys.argv[1:] if argv is None else argv) + "`\n")
    with open(os.path.join(a.out, "likelihood.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
