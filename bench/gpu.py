"""GPU benchmark (bench/README.md, Workloads): fmnumpy's CUDA kernels against plain PyTorch.

    python bench/gpu.py            on a GPU (bench/run_gpu.sh runs the CUDA tests first)
    python bench/gpu.py --best-from F.json      with the winners of the launch-setting
                                                sweep (bench/gpu_sweep.py, gpu_sweep.json)
    python bench/gpu.py --smoke    anywhere: tiny sizes, CUDA simulator, torch on the CPU
    python bench/gpu.py --dry      the same, plus tiny static shared memory
                                   (dynamic-memory paths): checks the script

First validates (same weights and batch: loss, gradient, one Adam step, samples,
fmnumpy vs PyTorch), then times, alternating fmnumpy and PyTorch run by run:
training steps/s of model B at batch 256 and 65,536 (50 warm-up steps, then
timed runs of 200 steps, median) and sampling time of models A and B for 1M
particles (Euler 100 steps; RK4 25 steps), median of timed solves after one
warm-up; log_prob of 1M points (RK4 25 steps) against PyTorch's exact divergence
on the GPU and fmnumpy's CPU build.  Compilation is timed separately; host/device copies are outside the
timed regions.  PyTorch: eager float32, TF32 off.  Every workload is wrapped so
that one failure still reports the rest.  Writes gpu.json and gpu.md to $OUT if
set, else bench/results/, after every workload.

``--best-from`` times train B at the largest batch and each sampling workload with
the fastest valid variant of bench/gpu_sweep.py (its ``sweep_best``).
"""
import json
import statistics
import sys
import time
import traceback

if __package__:
    from . import gpu_common as C
    from .likelihood import torch_log_prob
else:
    import gpu_common as C       # python bench/gpu.py (first: it may set up the simulator)
    from likelihood import torch_log_prob

import numpy as np  # noqa: E402



# ---- the PyTorch reference ------------------------------------------------------------

def torch_model(torch, spec, theta, device):
    """nn.Sequential of nn.Linear + activation with fmnumpy's weights (W is (n_in, n_out)
    in fmnumpy, nn.Linear.weight is (n_out, n_in))."""
    nn = torch.nn
    act = {"silu": nn.SiLU, "selu": nn.SELU, "relu": nn.ReLU, "tanh": nn.Tanh}[spec.activation]
    sizes = [int(s) for s in spec.sizes]
    layers, p = [], 0
    for l in range(len(sizes) - 1):
        n_in, n_out = sizes[l], sizes[l + 1]
        lin = nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(theta[p:p + n_in * n_out].reshape(n_in, n_out).T
                                              .copy()))
            lin.bias.copy_(torch.from_numpy(theta[p + n_in * n_out:p + n_in * n_out + n_out]))
        p += n_in * n_out + n_out
        layers.append(lin)
        if l < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).to(device=device, dtype=torch.float32)


def torch_flat_grad(torch, model):
    """Gradients in fmnumpy's flat layout: W^T of weight.grad, then bias.grad, per layer."""
    out = []
    for m in model:
        if isinstance(m, torch.nn.Linear):
            out += [m.weight.grad.T.reshape(-1), m.bias.grad.reshape(-1)]
    return torch.cat(out).detach().cpu().numpy()


def torch_flat_params(torch, model):
    out = []
    for m in model:
        if isinstance(m, torch.nn.Linear):
            out += [m.weight.T.reshape(-1), m.bias.reshape(-1)]
    return torch.cat(out).detach().cpu().numpy()


def torch_loss(torch, model, x0, x1, t):
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    ut = x1 - x0
    v = model(torch.cat([xt, t[:, None]], dim=1))
    return ((v - ut) ** 2).mean()


def torch_spirals(torch, n, device):
    """2spirals (bench/README.md, Workloads) drawn with torch ops on the device."""
    u = torch.rand(n, device=device)
    s = torch.sqrt(u) * 3 * np.pi
    arm = torch.stack([-torch.cos(s) * s + torch.rand(n, device=device) * 0.5,
                       torch.sin(s) * s + torch.rand(n, device=device) * 0.5], dim=1)
    sign = torch.where(torch.rand(n, device=device) < 0.5, 1.0, -1.0)[:, None]
    return sign * arm / 3 + 0.1 * torch.randn(n, 2, device=device)


def torch_euler(torch, model, x, steps):
    h = 1.0 / steps
    t = torch.empty(x.shape[0], 1, device=x.device)
    with torch.no_grad():
        for n in range(steps):
            t.fill_(n * h)
            x = x + h * model(torch.cat([x, t], dim=1))
    return x


def torch_rk4(torch, model, x, steps):
    h = 1.0 / steps
    t = torch.empty(x.shape[0], 1, device=x.device)
    with torch.no_grad():
        for n in range(steps):
            def f(y, c):
                t.fill_(n * h + c * h)
                return model(torch.cat([y, t], dim=1))
            k1 = f(x, 0.0)
            k2 = f(x + 0.5 * h * k1, 0.5)
            k3 = f(x + 0.5 * h * k2, 0.5)
            k4 = f(x + h * k3, 1.0)
            x = x + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
    return x


# ---- validation ------------------------------------------------------------------------

def validate(torch, dev, cfg, res):
    from fmnumpy.euclidean.cuda.solvers import CudaSampler, cuda_sample
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    spec, theta = C.model_of("B")
    B = cfg["val_batch"]
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((B, 2)).astype(np.float32)
    x1 = (rng.standard_normal((B, 2)) * 2).astype(np.float32)
    t = rng.random(B).astype(np.float32)

    tr = CudaTrainer(spec, C.adam(), B)
    tr.set_state(theta, 0 * theta, 0 * theta, theta)
    loss, grad = tr.loss_and_grad(x0, x1, t)
    model = torch_model(torch, spec, theta, dev)
    tt = [torch.from_numpy(a).to(dev) for a in (x0, x1, t)]
    tl = torch_loss(torch, model, *tt)
    tl.backward()
    tg = torch_flat_grad(torch, model)
    tl = float(tl.detach())
    res["validation"]["loss"] = dict(fmnumpy=loss, torch=tl, rel_diff=abs(loss - tl) / abs(tl))
    res["validation"]["grad_max_rel_diff"] = float(np.abs(grad - tg).max() / np.abs(tg).max())

    # one Adam step
    opt = torch.optim.Adam(model.parameters(), lr=C.LR, betas=C.BETAS, eps=C.EPS)
    opt.step()
    tr.run_arrays(x0[None], x1[None], t[None])
    got = tr.get_state()["theta"]
    tp = torch_flat_params(torch, model)
    res["validation"]["adam_step_max_abs_diff"] = float(np.abs(got - tp).max())
    res["validation"]["kernels_train"] = C.kernel_info(trainer=tr)

    # samples
    N, steps = cfg["val_particles"], cfg["val_steps"]
    xs = np.random.default_rng(2).standard_normal((N, 2)).astype(np.float32)
    ours = cuda_sample(theta, spec, xs, "euler", steps)
    ref = torch_euler(torch, torch_model(torch, spec, theta, dev),
                      torch.from_numpy(xs).to(dev), steps).cpu().numpy()
    res["validation"]["euler_max_abs_diff"] = float(np.abs(ours - ref).max())
    ours = cuda_sample(theta, spec, xs, "rk4", max(1, steps // 4))
    ref = torch_rk4(torch, torch_model(torch, spec, theta, dev),
                    torch.from_numpy(xs).to(dev), max(1, steps // 4)).cpu().numpy()
    res["validation"]["rk4_max_abs_diff"] = float(np.abs(ours - ref).max())
    res["validation"]["kernels_sample"] = C.kernel_info(sampler=CudaSampler(theta, spec))
    v = res["validation"]
    v["ok"] = bool(v["loss"]["rel_diff"] < 1e-4 and v["grad_max_rel_diff"] < 1e-3
                   and v["adam_step_max_abs_diff"] < 1e-5 and v["euler_max_abs_diff"] < 1e-3
                   and v["rk4_max_abs_diff"] < 1e-3)


# ---- timing ----------------------------------------------------------------------------

def bench_train(torch, dev, cfg, name, B, sync_all, settings=None):
    """``settings``: launch settings (TILES, config) of the variant to time."""
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    spec, theta = C.model_of(name)
    out = dict(model=name, batch=B, params=spec.n_params, settings=settings or {})

    with C.applied(settings or {}):
        tr = CudaTrainer(spec, C.adam(), B, spirals=True, seed=0)
    tr.set_state(theta, 0 * theta, 0 * theta, theta)
    state = {"step": 0}
    total = 10 ** 9

    def ours(n):
        left = n
        while left:
            k = tr.span(state["step"], left)
            losses, bad = tr.run(state["step"], k, total)
            if bad:
                raise RuntimeError(f"non-finite loss at step {bad}")
            state["step"] += k
            left -= k
        return losses

    with C.applied(settings or {}):
        out["compile_s"] = C.timed(lambda: ours(1), sync_all)
    out["cfg"], out["fallbacks"] = tr.cfg._asdict(), [e for _, e in tr.fallbacks]
    model = torch_model(torch, spec, theta, dev)
    opt = torch.optim.Adam(model.parameters(), lr=C.LR, betas=C.BETAS, eps=C.EPS)

    def ref(n):
        for _ in range(n):
            x0 = torch.randn(B, 2, device=dev)
            t = torch.rand(B, device=dev)
            x1 = torch_spirals(torch, B, dev)
            opt.zero_grad(set_to_none=True)
            torch_loss(torch, model, x0, x1, t).backward()
            opt.step()

    C.timed(lambda: ours(cfg["warmup"]), sync_all)
    C.timed(lambda: ref(cfg["warmup"]), sync_all)
    t_ours, t_ref = [], []
    t0 = time.perf_counter()
    for r in range(cfg["runs"]):
        t_ours.append(C.timed(lambda: ours(cfg["steps"]), sync_all))
        t_ref.append(C.timed(lambda: ref(cfg["steps"]), sync_all))
        if time.perf_counter() - t0 > cfg["budget_s"] and r >= 1:
            break
    flops = 6 * spec.n_params * B
    for who, ts in (("fmnumpy", t_ours), ("torch", t_ref)):
        sps = cfg["steps"] / statistics.median(ts)
        out[who] = dict(steps_per_s=sps, tflops=flops * sps / 1e12, runs=len(ts))
    out["last_loss"] = float(ours(1)[-1])
    out["kernels"] = C.kernel_info(trainer=tr)
    return out


def bench_sample(torch, dev, cfg, name, method, steps, sync_all, settings=None):
    """``settings``: launch settings (TILES, config) of the variant to time."""
    spec, theta = C.model_of(name)
    N = cfg["particles"]
    x0 = np.random.default_rng(1).standard_normal((N, 2)).astype(np.float32)
    out = dict(model=name, method=method, steps=steps, particles=N, params=spec.n_params,
               settings=settings or {})
    smp, _, out["compile_s"], _ = C.first_solve(spec, theta, x0, method, steps, settings,
                                                sync_all)
    out["cfg"], out["fallbacks"] = smp.cfg._asdict(), [e for _, e in smp.fallbacks]
    model = torch_model(torch, spec, theta, dev)
    x_t = torch.from_numpy(x0).to(dev)
    step_fn = torch_euler if method == "euler" else torch_rk4
    step_fn(torch, model, x_t, steps)
    t_ours, t_ref = [], []
    for r in range(cfg["sample_runs"]):
        t_ours.append(C.timed_solve(smp, x0, method, steps, sync_all))
        t_ref.append(C.timed(lambda: step_fn(torch, model, x_t, steps), sync_all))
    evals = steps * (1 if method == "euler" else 4)
    return dict(out, **medians(t_ours, t_ref, 2 * spec.n_params * N * evals))


def medians(t_ours, t_ref, flops):
    """{fmnumpy, torch: {seconds (median), tflops, runs}} of alternated timed solves."""
    out = {}
    for who, ts in (("fmnumpy", t_ours), ("torch", t_ref)):
        s = statistics.median(ts)
        out[who] = dict(seconds=s, tflops=flops / s / 1e12, runs=len(ts))
    return out


def bench_logprob(torch, dev, cfg, name, steps, sync_all):
    """log_prob of N points (RK4, ``steps`` steps from t = 1 back to 0) by the fused
    GPU kernel, against PyTorch's exact divergence on the GPU (alternated runs) and
    fmnumpy's CPU build on all cores (``logp_cpu_points`` of the points, scaled to N:
    the cost is linear in N).  Validated first on ``val_particles`` points against the
    CPU's float64 oracle."""
    import numba

    from fmnumpy.euclidean.cuda.device import cuda_module
    from fmnumpy.euclidean.cuda.likelihood import CudaLikelihood, cuda_solve_logp
    from fmnumpy.euclidean.likelihood import gaussian_logpdf, log_prob
    spec, theta = C.model_of(name)
    N, nv, nc = cfg["particles"], cfg["val_particles"], cfg["logp_cpu_points"]
    x = np.random.default_rng(2).standard_normal((N, 2)).astype(np.float32)
    out = dict(model=name, method="rk4", steps=steps, particles=N, params=spec.n_params)
    model = torch_model(torch, spec, theta, dev)
    oracle = log_prob(theta, spec, x[:nv], "rk4", steps, dtype="float64")
    xz, lz = cuda_solve_logp(theta, spec, x[:nv], np.zeros(nv), "rk4", steps, 1.0, 0.0)
    ours_v = gaussian_logpdf(xz.astype(np.float64)) - lz
    ref_v = torch_log_prob(model, torch.from_numpy(x[:nv]).to(dev), steps)
    out["max_err_nats"] = dict(fmnumpy=float(np.abs(ours_v - oracle).max()),
                               torch=float(np.abs(ref_v - oracle).max()))
    if out["max_err_nats"]["fmnumpy"] > 1e-3:
        raise RuntimeError(f"GPU log_prob differs from the CPU oracle: {out['max_err_nats']}")
    cu = cuda_module()
    t0 = time.perf_counter()
    lik = CudaLikelihood(theta, spec)

    def ours():
        x_d, l_d = cu.to_device(x), cu.to_device(np.zeros(N))
        return C.timed(lambda: lik.integrate_logp(x_d, l_d, "rk4", steps, 1.0, 0.0), sync_all)

    ours()
    out["compile_s"] = time.perf_counter() - t0
    out["cfg"], out["fallbacks"] = lik.cfg._asdict(), [e for _, e in lik.fallbacks]
    x_t = torch.from_numpy(x).to(dev)
    torch_log_prob(model, x_t[:1000], steps)
    t_ours, t_ref = [], []
    for r in range(cfg["sample_runs"]):
        t_ours.append(ours())
        t_ref.append(C.timed(lambda: torch_log_prob(model, x_t, steps), sync_all))
    log_prob(theta, spec, x[:64], "rk4", steps)          # compile the CPU build
    t_cpu = []
    for r in range(2):
        t1 = time.perf_counter()
        log_prob(theta, spec, x[:nc], "rk4", steps)
        t_cpu.append(time.perf_counter() - t1)
    evals = 4 * steps
    # forward + D = 2 tangent passes per evaluation
    out.update(medians(t_ours, t_ref, 2 * spec.n_params * N * evals * 3))
    out["cpu"] = dict(threads=numba.get_num_threads(), points=nc,
                      seconds=min(t_cpu), seconds_scaled=min(t_cpu) * N / nc)
    out["gpu_vs_cpu"] = out["cpu"]["seconds_scaled"] / out["fmnumpy"]["seconds"]
    return out


def load_best(path):
    """The sweep's winners {workload: settings} from a gpu_sweep.json (missing: {})."""
    try:
        with open(path) as f:
            return {w: b["settings"] for w, b in json.load(f).get("sweep_best", {}).items()}
    except (OSError, ValueError, KeyError):
        return {}


# ---- report ----------------------------------------------------------------------------

def variant(r):
    return f" [{r['settings']}]" if r.get("settings") else ""


def markdown(res):
    lines = [f"# fmnumpy CUDA benchmark ({res['gpu']})", "",
             f"versions: {res['versions']}", "",
             f"validation ok: {res['validation'].get('ok')}  "
             + ", ".join(f"{k}={v}" for k, v in res["validation"].items()
                         if not k.startswith("kernels") and k != "ok"), "",
             "| workload | fmnumpy | torch | fmnumpy TFLOP/s | torch TFLOP/s | compile s |",
             "|---|---|---|---|---|---|"]
    for r in res["train"]:
        if "error" in r:
            lines.append(f"| train {r['model']} B={r['batch']} | error: {r['error'][:60]} "
                         "| | | | |")
            continue
        lines.append(f"| train {r['model']} B={r['batch']} (steps/s){variant(r)} | "
                     f"{r['fmnumpy']['steps_per_s']:,.0f} | {r['torch']['steps_per_s']:,.0f} | "
                     f"{r['fmnumpy']['tflops']:.2f} | {r['torch']['tflops']:.2f} | "
                     f"{r['compile_s']:.1f} |")
    for part, name in (("sample", "sample"), ("logprob", "log_prob")):
        for r in res.get(part, []):
            if "error" in r:
                lines.append(f"| {name} {r['model']} {r.get('method', '')} | error: "
                             f"{r['error'][:60]} | | | | |")
                continue
            lines.append(f"| {name} {r['model']} {r['method']} {r['steps']} "
                         f"N={r['particles']:,} (s){variant(r)} | "
                         f"{r['fmnumpy']['seconds']:.4f} | {r['torch']['seconds']:.4f} | "
                         f"{r['fmnumpy']['tflops']:.2f} | {r['torch']['tflops']:.2f} | "
                         f"{r['compile_s']:.1f} |")
    for r in res.get("logprob", []):
        if "error" not in r:
            c = r["cpu"]
            lines.append(f"\nlog_prob {r['model']}: GPU {r['gpu_vs_cpu']:.1f}x the CPU build "
                         f"({c['threads']} threads, {c['points']:,} points in "
                         f"{c['seconds']:.2f} s, scaled to N); max error vs the float64 oracle "
                         f"{r['max_err_nats']['fmnumpy']:.1e} nats (PyTorch "
                         f"{r['max_err_nats']['torch']:.1e})")
    return "\n".join(lines + C.errors_markdown(res)) + "\n"


def main(argv=None):
    def own(ap):
        ap.add_argument("--only", default="", help="comma list of: validate,train,sample,logprob "
                        "(default: all; the sweep is bench/gpu_sweep.py)")
        ap.add_argument("--best-from", default="", help="gpu_sweep.json: time train B "
                        "(largest batch) and sampling with the sweep's fastest valid variants")

    a, cfg = C.parse_args(__doc__, argv, own)
    parts = ("validate", "train", "sample", "logprob")
    only = set(a.only.split(",")) if a.only else set(parts)
    if only - set(parts):
        a.error(f"--only: unknown {sorted(only - set(parts))} (the sweep is bench/gpu_sweep.py)")
    best = load_best(a.best_from) if a.best_from else {}
    torch, dev, sync_all, res, dump = C.start(a.smoke, "gpu", markdown)
    res.update(validation={}, train=[], sample=[], logprob=[], best_from=best)
    t_all = time.perf_counter()

    if "validate" in only:
        try:
            validate(torch, dev, cfg, res)
        except Exception:
            res["errors"].append("validate: " + traceback.format_exc())
        print("validation", res["validation"], flush=True)
        dump()
    def workload(part, label, meta, bench, *args, **kw):
        """bench(torch, dev, cfg, *args, sync_all, **kw) -> its result, or ``meta``
        with the error: one failure still reports the rest."""
        try:
            r = bench(torch, dev, cfg, *args, sync_all, **kw)
        except Exception as e:
            r = dict(meta, error=repr(e))
            res["errors"].append(f"{label}: " + traceback.format_exc())
        res[part].append(r)
        print(part, r, flush=True)
        dump()

    if "train" in only:
        for name, B in cfg["train"]:
            workload("train", f"train {name} {B}", dict(model=name, batch=B), bench_train,
                     name, B, settings=best.get("train_B") if B == cfg["train"][-1][1] else None)
    if "sample" in only:
        for name, method, steps in cfg["sample"]:
            workload("sample", f"sample {name} {method}",
                     dict(model=name, method=method, steps=steps), bench_sample,
                     name, method, steps, settings=best.get("sample_" + name))
    if "logprob" in only:
        for name, steps in cfg["logprob"]:
            workload("logprob", f"logprob {name}", dict(model=name, method="rk4", steps=steps),
                     bench_logprob, name, steps)
    return C.finish(res, t_all, dump, markdown)


if __name__ == "__main__":
    sys.exit(main())
