"""GPU benchmark (shared/WORKLOADS.md): fmnumpy's CUDA kernels against plain PyTorch.

    python bench/gpu.py            on a GPU (bench/run_gpu.sh runs the CUDA tests first)
    python bench/gpu.py --only sweep            the launch-setting variants (SWEEP) per
                                                workload; writes gpu_sweep.json / .md
    python bench/gpu.py --best-from F.json      the benchmark with the sweep's winners
    python bench/gpu.py --smoke    anywhere: tiny sizes, CUDA simulator, torch on the CPU
    python bench/gpu.py --dry [--only sweep]    the same, plus tiny static shared memory
                                                (dynamic-memory paths): checks the script

First validates (same weights and batch: loss, gradient, one Adam step, samples,
fmnumpy vs PyTorch), then times, alternating fmnumpy and PyTorch run by run:
training steps/s of model B at batch 256 and 65,536 (50 warm-up steps, then
timed runs of 200 steps, median) and sampling time of models A and B for 1M
particles (Euler 100 steps; RK4 25 steps), median of timed solves after one
warm-up.  Compilation is timed separately; host/device copies are outside the
timed regions.  PyTorch: eager float32, TF32 off.  Every workload is wrapped so
that one failure still reports the rest.  Writes gpu.json and gpu.md (the sweep:
gpu_sweep.json and gpu_sweep.md) to $OUT if set, else bench/results/, after every
workload.

The sweep (SWEEP) times launch-setting variants of sampling A, sampling B and
training B at the largest batch, each validated against the workload's default
(samples within 1e-3, gradient within 1e-3 relative), round robin over the
workloads within a time budget; ``--best-from`` then runs the benchmark above
with each workload's fastest valid variant.
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import traceback

DRY = "--dry" in sys.argv
SMOKE = "--smoke" in sys.argv or DRY
if SMOKE and os.environ.get("FMNUMPY_CUDA_REAL") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"     # before numba is first imported

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy import config  # noqa: E402
from fmnumpy.mlp import MLPSpec, init_params  # noqa: E402
from fmnumpy.optim import AdamConfig  # noqa: E402

MODELS = {"A": ((64, 64, 64), "selu"), "B": ((256, 256, 256), "silu")}
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
FULL = dict(train=(("B", 256), ("B", 65536)), warmup=50, runs=7, steps=200,
            sample=(("A", "euler", 100), ("B", "euler", 100), ("A", "rk4", 25),
                    ("B", "rk4", 25)),
            particles=1_000_000, sample_runs=3, val_batch=1000, val_particles=4096,
            val_steps=100, budget_s=25.0, sweep_steps=100, sweep_budget_s=200.0)
QUICK = dict(train=(("B", 12), ("B", 40)), warmup=2, runs=2, steps=3,
             sample=(("A", "euler", 3), ("B", "rk4", 2)), particles=40, sample_runs=2,
             val_batch=12, val_particles=16, val_steps=3, budget_s=60.0, sweep_steps=2,
             sweep_budget_s=600.0)
SMOKE_MODELS = {"A": ((6,), "selu"), "B": ((9, 17), "silu")}


def shrink_tiles():
    """Smoke runs: the tiny tiles of tests/test_cuda.py (the simulator is slow)."""
    from fmnumpy.cuda import tiles
    config.CUDA_THREADS_PER_BLOCK = 8
    tiles.TILES.update(mlp_tm=2, mlp_tn=4, mlp_bk=4, mlp_bk_small=8, mlp_stage_regs=4,
                       min_blocks=3, mlp_threads_narrow=8, max_registers=0, wg_bm=8, wg_bn=8,
                       wg_tm=4, wg_tn=2, wg_bk=4, wg_target_blocks=24, max_grid=4)
    if DRY:       # tiny static shared memory: the layouts take the dynamic-memory paths
        tiles.SHARED_LIMIT = 512


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
    """2spirals (WORKLOADS.md) drawn with torch ops on the device."""
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


# ---- helpers ---------------------------------------------------------------------------

def sync(torch_dev):
    from fmnumpy.cuda.device import synchronize
    synchronize()
    if torch_dev is not None:
        torch_dev()


def timed(fn, sync_all):
    sync_all()
    t0 = time.perf_counter()
    fn()
    sync_all()
    return time.perf_counter() - t0


def spec_of(name):
    hidden, act = (SMOKE_MODELS if SMOKE else MODELS)[name]
    return MLPSpec(2, hidden, act)


def adam():
    return AdamConfig(lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0, decoupled=False, clip=0.0,
                      ema_decay=0.999, warmup=0, schedule="constant")


def kernel_info(trainer=None, sampler=None):
    """Registers, local and shared memory per kernel (real GPU only)."""
    out = {}
    ks = {}
    if trainer is not None:
        ks.update(forward_backward=trainer.k_fb, weight_grad=trainer.k_wg,
                  reduce_grad=trainer.k_red, adam_ema=trainer.k_adam)
    if sampler is not None:
        ks["rk_mlp"] = sampler.kernel
    def one(v):          # {signature: value} for a kernel compiled once
        return next(iter(v.values())) if isinstance(v, dict) and len(v) == 1 else str(v)

    for name, k in ks.items():
        try:
            out[name] = dict(regs=one(k.get_regs_per_thread()),
                             local=one(k.get_local_mem_per_thread()),
                             shared=one(k.get_shared_mem_per_block()))
        except Exception as e:   # simulator, or an API difference
            out[name] = str(e)[:80]
    return out


# ---- validation ------------------------------------------------------------------------

def validate(torch, dev, cfg, res):
    from fmnumpy.cuda.sampler import CudaSampler, cuda_sample
    from fmnumpy.cuda.trainer import CudaTrainer
    spec = spec_of("B")
    theta = init_params(spec.sizes, np.random.default_rng(0))
    B = cfg["val_batch"]
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((B, 2)).astype(np.float32)
    x1 = (rng.standard_normal((B, 2)) * 2).astype(np.float32)
    t = rng.random(B).astype(np.float32)

    tr = CudaTrainer(spec, adam(), B)
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
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    opt.step()
    tr.run_arrays(x0[None], x1[None], t[None])
    got = tr.get_state()["theta"]
    tp = torch_flat_params(torch, model)
    res["validation"]["adam_step_max_abs_diff"] = float(np.abs(got - tp).max())
    res["validation"]["kernels_train"] = kernel_info(trainer=tr)

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
    res["validation"]["kernels_sample"] = kernel_info(sampler=CudaSampler(theta, spec))
    v = res["validation"]
    v["ok"] = bool(v["loss"]["rel_diff"] < 1e-4 and v["grad_max_rel_diff"] < 1e-3
                   and v["adam_step_max_abs_diff"] < 1e-5 and v["euler_max_abs_diff"] < 1e-3
                   and v["rk4_max_abs_diff"] < 1e-3)


# ---- timing ----------------------------------------------------------------------------

def bench_train(torch, dev, cfg, name, B, sync_all, settings=None):
    """``settings``: launch settings (TILES, config) of the variant to time."""
    from fmnumpy.cuda.trainer import CudaTrainer
    spec = spec_of(name)
    theta = init_params(spec.sizes, np.random.default_rng(0))
    out = dict(model=name, batch=B, params=spec.n_params, settings=settings or {})

    with applied(settings or {}):
        tr = CudaTrainer(spec, adam(), B, data="2spirals", seed=0)
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

    with applied(settings or {}):
        out["compile_s"] = timed(lambda: ours(1), sync_all)
    out["cfg"], out["fallbacks"] = tr.cfg._asdict(), [e for _, e in tr.fallbacks]
    model = torch_model(torch, spec, theta, dev)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)

    def ref(n):
        for _ in range(n):
            x0 = torch.randn(B, 2, device=dev)
            t = torch.rand(B, device=dev)
            x1 = torch_spirals(torch, B, dev)
            opt.zero_grad(set_to_none=True)
            torch_loss(torch, model, x0, x1, t).backward()
            opt.step()

    timed(lambda: ours(cfg["warmup"]), sync_all)
    timed(lambda: ref(cfg["warmup"]), sync_all)
    t_ours, t_ref = [], []
    t0 = time.perf_counter()
    for r in range(cfg["runs"]):
        t_ours.append(timed(lambda: ours(cfg["steps"]), sync_all))
        t_ref.append(timed(lambda: ref(cfg["steps"]), sync_all))
        if time.perf_counter() - t0 > cfg["budget_s"] and r >= 1:
            break
    flops = 6 * spec.n_params * B
    for who, ts in (("fmnumpy", t_ours), ("torch", t_ref)):
        sps = cfg["steps"] / statistics.median(ts)
        out[who] = dict(steps_per_s=sps, tflops=flops * sps / 1e12, runs=len(ts))
    out["last_loss"] = float(ours(1)[-1])
    out["kernels"] = kernel_info(trainer=tr)
    return out


def bench_sample(torch, dev, cfg, name, method, steps, sync_all, settings=None):
    """``settings``: launch settings (TILES, config) of the variant to time."""
    from fmnumpy.cuda.device import cuda_module
    from fmnumpy.cuda.sampler import CudaSampler
    spec = spec_of(name)
    theta = init_params(spec.sizes, np.random.default_rng(0))
    N = cfg["particles"]
    x0 = np.random.default_rng(1).standard_normal((N, 2)).astype(np.float32)
    cu = cuda_module()
    out = dict(model=name, method=method, steps=steps, particles=N, params=spec.n_params,
               settings=settings or {})
    t0 = time.perf_counter()
    with applied(settings or {}):
        smp = CudaSampler(theta, spec)
        x_d = cu.to_device(x0)
        smp.integrate(x_d, method, steps)
        sync_all()
    out["compile_s"] = time.perf_counter() - t0
    out["cfg"], out["fallbacks"] = smp.cfg._asdict(), [e for _, e in smp.fallbacks]
    model = torch_model(torch, spec, theta, dev)
    x_t = torch.from_numpy(x0).to(dev)
    step_fn = torch_euler if method == "euler" else torch_rk4
    step_fn(torch, model, x_t, steps)
    t_ours, t_ref = [], []
    for r in range(cfg["sample_runs"]):
        x_d = cu.to_device(x0)
        t_ours.append(timed(lambda: smp.integrate(x_d, method, steps), sync_all))
        t_ref.append(timed(lambda: step_fn(torch, model, x_t, steps), sync_all))
    evals = steps * (1 if method == "euler" else 4)
    flops = 2 * spec.n_params * N * evals
    for who, ts in (("fmnumpy", t_ours), ("torch", t_ref)):
        s = statistics.median(ts)
        out[who] = dict(seconds=s, tflops=flops / s / 1e12, runs=len(ts))
    return out


# ---- sweep: variants of the launch settings, per workload --------------------------------

# (name, settings) per workload, most promising first; settings are TILES keys and
# fmnumpy.config names.  The first variant is the default: the others are validated
# against its result (samples, gradient) before they count.
K256, K113, K200 = 256, 113 * 1024, 200 * 1024
SWEEP = {
    "sample_A": (
        ("default", {}),
        ("stream_exact", {"mlp_resident": 0, "mlp_dynamic_shared": 0,            # old default
                          "mlp_threads_narrow": 256, "CUDA_FASTMATH_SAMPLER": False}),
        ("res128_tm4", {"mlp_tm": 4}),
        ("res256_tm4", {"mlp_threads_narrow": 256, "mlp_tm": 4}),
        ("res256_tm4_1sm", {"mlp_threads_narrow": 256, "mlp_tm": 4, "min_blocks_per_sm": 1}),
        ("res128_tm8_exact", {"CUDA_FASTMATH_SAMPLER": False}),
        ("stream_fast", {"mlp_resident": 0, "mlp_dynamic_shared": 0, "mlp_threads_narrow": 256}),
        ("res256_tm8_200k", {"mlp_threads_narrow": 256, "mlp_dynamic_shared": K200,
                             "min_blocks_per_sm": 1}),
        ("res128_noregcap", {"max_registers": 0}),
    ),
    "sample_B": (
        ("default", {}),
        ("exact", {"CUDA_FASTMATH_SAMPLER": False}),                          # old default
        ("w256_dyn_1sm", {"mlp_threads_wide": K256, "min_blocks_per_sm": 1}),
        ("w256_dyn", {"mlp_threads_wide": K256}),
        ("w128_noregcap", {"max_registers": 0}),
        ("w512_pb128_1sm", {"mlp_threads_wide": 512, "mlp_dynamic_shared": K200,
                            "min_blocks_per_sm": 1}),
        ("w256_dyn_1sm_exact", {"mlp_threads_wide": K256, "min_blocks_per_sm": 1,
                                "CUDA_FASTMATH_SAMPLER": False}),
    ),
    "train_B": (
        ("default", {}),
        ("fb256_dyn_1sm", {"fb_threads": K256, "min_blocks_per_sm": 1}),
        ("fb_fast", {"CUDA_FASTMATH_FORWARD_BACKWARD": True}),
        ("fb256_dyn_1sm_fast", {"fb_threads": K256, "min_blocks_per_sm": 1,
                                "CUDA_FASTMATH_FORWARD_BACKWARD": True}),
        ("fb256_dyn", {"fb_threads": K256}),
        ("wg128x64_8x4", dict(wg_bm=128, wg_bn=64, wg_tm=8, wg_tn=4)),
        ("wg_bk16", {"wg_bk": 16}),
        ("wg_blocks528", {"wg_target_blocks": 528}),
    ),
}
SWEEP_STEPS = 100          # Euler steps of the sampling variants (model A and B, N particles)


def dry_settings(settings):
    """--dry: the variant's settings on the simulator's tiny tiles (a few threads)."""
    out = {}
    for k, v in settings.items():
        if k.startswith("wg_"):
            continue                     # the tiny weight-gradient tiles stay
        if k in ("mlp_threads_narrow", "mlp_threads_wide", "fb_threads"):
            v = min(int(v), 16)
        elif k in ("mlp_tm", "mlp_bk"):
            v = min(int(v), 4)
        out[k] = v
    return out


@contextlib.contextmanager
def applied(settings):
    """TILES entries and fmnumpy.config names of ``settings`` set for the block."""
    from fmnumpy.cuda import tiles as T
    if DRY:
        settings = dry_settings(settings)
    saved_t = dict(T.TILES)
    saved_c = {k: getattr(config, k) for k in settings if k.isupper()}
    for k, v in settings.items():
        if k.isupper():
            setattr(config, k, v)
        elif k not in T.TILES:
            raise KeyError(f"unknown tile setting {k!r}")
        else:
            T.TILES[k] = v
    try:
        yield
    finally:
        T.TILES.clear()
        T.TILES.update(saved_t)
        for k, v in saved_c.items():
            setattr(config, k, v)


def sweep_sample(model, cfg, sync_all, settings):
    """One sampling variant: Euler SWEEP_STEPS steps of N particles, best of two timed
    runs after the first (compiling) one; returns (result dict, x after the first run)."""
    from fmnumpy.cuda.device import cuda_module
    from fmnumpy.cuda.sampler import CudaSampler
    cu = cuda_module()
    spec = spec_of(model)
    theta = init_params(spec.sizes, np.random.default_rng(0))
    N, steps = cfg["particles"], cfg["sweep_steps"]
    x0 = np.random.default_rng(1).standard_normal((N, 2)).astype(np.float32)
    with applied(settings):
        smp = CudaSampler(theta, spec)
        x_d = cu.to_device(x0)
        first = timed(lambda: smp.integrate(x_d, "euler", steps), sync_all)
    x1 = x_d.copy_to_host()
    ts = []
    for _ in range(2):
        x_d = cu.to_device(x0)
        ts.append(timed(lambda: smp.integrate(x_d, "euler", steps), sync_all))
    s = min(ts)
    return dict(seconds=s, first_s=first, tflops=2 * spec.n_params * N * steps / s / 1e12,
                cfg=smp.cfg._asdict(), fallbacks=[(c._asdict(), e) for c, e in smp.fallbacks],
                kernel=kernel_info(sampler=smp).get("rk_mlp")), x1


def sweep_train(cfg, sync_all, settings):
    """One training variant at the largest batch: the gradient of a fixed batch (for
    validation), per-kernel times and steps/s; returns (result dict, gradient)."""
    from fmnumpy.cuda.trainer import CudaTrainer
    spec = spec_of("B")
    theta = init_params(spec.sizes, np.random.default_rng(0))
    B = cfg["train"][-1][1]
    x0, x1 = np.random.default_rng(3).standard_normal((2, B, 2)).astype(np.float32)
    t = np.random.default_rng(4).random(B).astype(np.float32)
    with applied(settings):
        tr = CudaTrainer(spec, adam(), B, data="2spirals")
        tr.set_state(theta, 0 * theta, 0 * theta, theta)
        t_c = timed(lambda: tr.loss_and_grad(x0, x1, t), sync_all)
        loss, grad = tr.loss_and_grad(x0, x1, t)
        tr.run(0, 2, 100)                          # compiles weight_grad .. adam_ema
    n = 20 if not DRY else 1
    tr._begin(0, 1, 3, 100)
    tr.mode_now = tr.mode
    times = {}
    for pname, fn in zip(("forward_backward", "weight_grad", "reduce_grad", "adam_ema"),
                         tr.launchers(0, 3)):
        times[pname] = timed(lambda: [fn() for _ in range(n)], sync_all) / n * 1e3
    k = 40 if not DRY else 2
    st = timed(lambda: tr.run(0, k, 100), sync_all)
    return dict(batch=B, steps_per_s=k / st, kernel_ms=times, first_s=t_c, loss=loss,
                cfg=tr.cfg._asdict(), wg=tr.wg._asdict(), splits=tr.S,
                fallbacks=[(c._asdict(), e) for c, e in tr.fallbacks],
                kernels=kernel_info(trainer=tr)), grad


def sweep_order():
    """(workload, index) round robin over the workloads: every workload gets its most
    promising variants first, so a sweep cut short by its budget still covers all."""
    n = max(len(v) for v in SWEEP.values())
    return [(w, i) for i in range(n) for w in SWEEP if i < len(SWEEP[w])]


def sweep(cfg, sync_all, res, dump):
    """Time every variant of SWEEP (validated against the workload's default) within
    cfg["sweep_budget_s"]; res["sweep_best"][workload] = the fastest valid one."""
    res["sweep"] = []
    refs = {}
    t0 = time.perf_counter()
    for w, i in sweep_order():
        name, settings = SWEEP[w][i]
        r = dict(workload=w, variant=name, settings=settings)
        if time.perf_counter() - t0 > cfg["sweep_budget_s"]:
            r["skipped"] = "sweep budget spent"
            res["sweep"].append(r)
            continue
        try:
            if w.startswith("sample"):
                out, val = sweep_sample(w[-1], cfg, sync_all, settings)
                ref = refs.setdefault(w, val)
                out["max_abs_diff"] = float(np.abs(val - ref).max())
                out["valid"] = bool(out["max_abs_diff"] <= 1e-3 * max(1.0, np.abs(ref).max()))
            else:
                out, val = sweep_train(cfg, sync_all, settings)
                ref = refs.setdefault(w, val)
                out["grad_max_rel_diff"] = float(np.abs(val - ref).max() / np.abs(ref).max())
                out["valid"] = bool(out["grad_max_rel_diff"] < 1e-3)
            r.update(out)
        except Exception as e:
            r["error"] = repr(e)[:300]
            if i == 0:
                res["errors"].append(f"sweep {w} default: " + traceback.format_exc()[-2000:])
        res["sweep"].append(r)
        print("sweep", {k: v for k, v in r.items() if k not in ("kernels", "kernel")},
              flush=True)
        res["sweep_best"] = sweep_best(res["sweep"])
        dump()


def sweep_best(rows):
    """{workload: {variant, settings, score}} of the fastest valid variant so far."""
    best = {}
    for r in rows:
        if not r.get("valid"):
            continue
        score = r["seconds"] if "seconds" in r else 1.0 / r["steps_per_s"]
        w = r["workload"]
        if w not in best or score < best[w]["score"]:
            best[w] = dict(variant=r["variant"], settings=r["settings"], score=score)
    return best


def load_best(path):
    """The sweep's winners {workload: settings} from a gpu_sweep.json (missing: {})."""
    try:
        with open(path) as f:
            return {w: b["settings"] for w, b in json.load(f).get("sweep_best", {}).items()}
    except (OSError, ValueError, KeyError):
        return {}


# ---- report ----------------------------------------------------------------------------

def versions(torch):
    import numba
    v = dict(python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
             torch=getattr(torch, "__version__", None))
    try:
        from importlib import metadata
        v["numba_cuda"] = metadata.version("numba-cuda")
    except Exception:
        v["numba_cuda"] = None
    return v


def sweep_markdown(res):
    lines = ["", "## sweep (launch-setting variants; the fastest valid one is marked *)", "",
             "| workload | variant | result | check | layout | regs/local | first s |",
             "|---|---|---|---|---|---|---|"]
    best = {w: b["variant"] for w, b in res.get("sweep_best", {}).items()}
    for r in res["sweep"]:
        w, v = r["workload"], r["variant"]
        mark = " *" if best.get(w) == v else ""
        if "error" in r or "skipped" in r:
            lines.append(f"| {w} | {v} | {r.get('error', r.get('skipped'))[:90]} | | | | |")
            continue
        c = r.get("cfg", {})
        layout = (f"PB={c.get('PB')} NT={c.get('NT')} TM={c.get('TM')} BK={c.get('BK')} "
                  f"RES={c.get('RES')} DYN={c.get('DYN')}")
        if r.get("fallbacks"):
            layout += f" (fell back {len(r['fallbacks'])}x)"
        if "seconds" in r:
            k = r.get("kernel") if isinstance(r.get("kernel"), dict) else {}
            result = f"{r['seconds']:.4f} s ({r['tflops']:.1f} TFLOP/s)"
            check = f"diff {r['max_abs_diff']:.1e}"
        else:
            k = (r.get("kernels") or {}).get("forward_backward")
            k = k if isinstance(k, dict) else {}
            ms = ", ".join(f"{n[:6]} {t:.3f}" for n, t in r["kernel_ms"].items())
            result = f"{r['steps_per_s']:.0f} steps/s (ms: {ms})"
            check = f"grad {r['grad_max_rel_diff']:.1e}"
        if not r.get("valid"):
            check += " INVALID"
        lines.append(f"| {w} | {v}{mark} | {result} | {check} | {layout} | "
                     f"{k.get('regs')}/{k.get('local')} | {r.get('first_s', 0):.1f} |")
    for w, b in res.get("sweep_best", {}).items():
        lines.append(f"\nbest {w}: {b['variant']} {b['settings']}")
    return lines


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
    for r in res["sample"]:
        if "error" in r:
            lines.append(f"| sample {r['model']} {r['method']} | error: {r['error'][:60]} "
                         "| | | | |")
            continue
        lines.append(f"| sample {r['model']} {r['method']} {r['steps']} N={r['particles']:,} (s)"
                     f"{variant(r)} | "
                     f"{r['fmnumpy']['seconds']:.4f} | {r['torch']['seconds']:.4f} | "
                     f"{r['fmnumpy']['tflops']:.2f} | {r['torch']['tflops']:.2f} | "
                     f"{r['compile_s']:.1f} |")
    if res.get("sweep"):
        lines += sweep_markdown(res)
    if res["errors"]:
        lines += ["", "errors:"] + [f"- {e[:300]}" for e in res["errors"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CUDA simulator, CPU torch)")
    ap.add_argument("--dry", action="store_true", help="--smoke with tiny static shared memory")
    ap.add_argument("--only", default="", help="comma list of: validate,train,sample,sweep "
                    "(default: all but sweep)")
    ap.add_argument("--best-from", default="", help="gpu_sweep.json: time train B (largest "
                    "batch) and sampling with the sweep's fastest valid variants")
    ap.add_argument("--sweep-budget", type=float, default=0.0, help="seconds for the sweep")
    a = ap.parse_args(argv)
    a.smoke = a.smoke or a.dry
    cfg = dict(QUICK if a.smoke else FULL)
    if a.sweep_budget:
        cfg["sweep_budget_s"] = a.sweep_budget
    only = set(a.only.split(",")) if a.only else {"validate", "train", "sample"}
    best = load_best(a.best_from) if a.best_from else {}
    stem = "gpu_sweep" if only == {"sweep"} else "gpu"
    out_dir = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results")
    os.makedirs(out_dir, exist_ok=True)
    if a.smoke:
        shrink_tiles()
    import torch
    from fmnumpy.cuda import require_gpu
    require_gpu()
    real = torch.cuda.is_available() and not a.smoke
    dev = "cuda" if real else "cpu"
    if real:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "CUDA simulator (smoke run)"
    torch_sync = torch.cuda.synchronize if real else None

    def sync_all():
        sync(torch_sync)

    res = dict(gpu=gpu, smoke=a.smoke, versions=versions(torch), validation={}, train=[],
               sample=[], errors=[], best_from=best,
               config={k: getattr(config, k) for k in dir(config) if k.startswith("CUDA_")})
    from fmnumpy.cuda.tiles import TILES
    res["config"]["tiles"] = dict(TILES)
    t_all = time.perf_counter()

    def dump():           # after every workload: a later failure or time-out loses nothing
        with open(os.path.join(out_dir, stem + ".json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        with open(os.path.join(out_dir, stem + ".md"), "w") as f:
            f.write(markdown(res))

    if "validate" in only:
        try:
            validate(torch, dev, cfg, res)
        except Exception:
            res["errors"].append("validate: " + traceback.format_exc())
        print("validation", res["validation"], flush=True)
        dump()
    if "train" in only:
        for name, B in cfg["train"]:
            try:
                r = bench_train(torch, dev, cfg, name, B, sync_all,
                                best.get("train_B") if B == cfg["train"][-1][1] else None)
            except Exception as e:
                r = dict(model=name, batch=B, error=repr(e))
                res["errors"].append(f"train {name} {B}: " + traceback.format_exc())
            res["train"].append(r)
            print("train", r, flush=True)
            dump()
    if "sample" in only:
        for name, method, steps in cfg["sample"]:
            try:
                r = bench_sample(torch, dev, cfg, name, method, steps, sync_all,
                                 best.get("sample_" + name))
            except Exception as e:
                r = dict(model=name, method=method, steps=steps, error=repr(e))
                res["errors"].append(f"sample {name} {method}: " + traceback.format_exc())
            res["sample"].append(r)
            print("sample", r, flush=True)
            dump()
    if "sweep" in only:
        try:
            sweep(cfg, sync_all, res, dump)
        except Exception:
            res["errors"].append("sweep: " + traceback.format_exc())
    res["total_s"] = time.perf_counter() - t_all
    dump()
    md = markdown(res)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(md)
    print(md)
    return 0 if not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
