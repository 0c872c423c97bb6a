"""The sweep of launch-setting variants (SWEEP) of the GPU workloads.

    python bench/gpu_sweep.py [--sweep-budget S]   on a GPU; writes gpu_sweep.json / .md
    python bench/gpu_sweep.py --smoke              anywhere: tiny sizes, CUDA simulator
    python bench/gpu_sweep.py --dry                the same, plus tiny static shared memory
                                                   (dynamic-memory paths): checks the script

Times launch-setting variants of sampling A, sampling B and training B at the largest
batch, each validated against the workload's default (samples within 1e-3, gradient
within 1e-3 relative), round robin over the workloads within a time budget.  Compilation
(first_s) is timed apart and host/device copies are outside the timed regions.  Writes
gpu_sweep.json and gpu_sweep.md to $OUT if set, else bench/results/, after every variant;
their ``sweep_best`` is each workload's fastest valid variant, which
``bench/gpu.py --best-from gpu_sweep.json`` benchmarks against PyTorch.
"""
import sys
import time
import traceback

if __package__:
    from . import gpu_common as C
else:
    import gpu_common as C     # python bench/gpu_sweep.py (first: it may set up the simulator)

import numpy as np  # noqa: E402

# tools that compile SWEEP's variants offline use these beside SWEEP
applied, spec_of = C.applied, C.spec_of
# ---- sweep: variants of the launch settings, per workload --------------------------------

# (name, settings) per workload, most promising first; settings are TILES keys and
# fmnumpy.config names.  The first variant is the default: the others are validated
# against its result (samples, gradient) before they count.
K256, K113, K200 = 256, 113 * 1024, 200 * 1024
SWEEP = {
    "sample_A": (
        ("default", {}),
        ("prev_default", {"mlp_kpass": 4, "mlp_stage_regs": 16}),   # measured before ptxas.md
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
        ("default", {}),                   # no spills (bench/results/ptxas.md)
        ("prev_default", {"mlp_kpass": 4, "mlp_stage_regs": 16}),   # spills, 1.059 s before
        ("k1_tm4", {"mlp_tm": 4, "mlp_stage_regs": 16}),           # no spills either
        ("k1_1sm", {"mlp_stage_regs": 16, "min_blocks_per_sm": 1}),  # no spills either
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
        ("default", {}),                   # no spills (ptxas.md)
        ("prev_default", {"fb_stage_regs": 16}),            # spills, 347 steps/s before
        ("k1_stage8", {"fb_kpass": 1}),
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


def sweep_sample(model, cfg, sync_all, settings):
    """One sampling variant: Euler cfg["sweep_steps"] steps of N particles, best of two
    timed runs after the first (compiling) one; returns (result dict, x after the first
    run)."""
    spec, theta = C.model_of(model)
    N, steps = cfg["particles"], cfg["sweep_steps"]
    x0 = np.random.default_rng(1).standard_normal((N, 2)).astype(np.float32)
    smp, x_d, _, first = C.first_solve(spec, theta, x0, "euler", steps, settings, sync_all)
    x1 = x_d.copy_to_host()
    s = min(C.timed_solve(smp, x0, "euler", steps, sync_all) for _ in range(2))
    return dict(seconds=s, first_s=first, tflops=2 * spec.n_params * N * steps / s / 1e12,
                cfg=smp.cfg._asdict(), fallbacks=[(c._asdict(), e) for c, e in smp.fallbacks],
                kernel=C.kernel_info(sampler=smp).get("rk_mlp")), x1


def sweep_train(cfg, sync_all, settings):
    """One training variant at the largest batch: the gradient of a fixed batch (for
    validation), per-kernel times and steps/s; returns (result dict, gradient)."""
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    spec, theta = C.model_of("B")
    B = cfg["train"][-1][1]
    x0, x1 = np.random.default_rng(3).standard_normal((2, B, 2)).astype(np.float32)
    t = np.random.default_rng(4).random(B).astype(np.float32)
    with applied(settings):
        tr = CudaTrainer(spec, C.adam(), B, spirals=True)
        tr.set_state(theta, 0 * theta, 0 * theta, theta)
        t_c = C.timed(lambda: tr.loss_and_grad(x0, x1, t), sync_all)
        loss, grad = tr.loss_and_grad(x0, x1, t)
        tr.run(0, 2, 100)                          # compiles weight_grad .. adam_ema
    n = 20 if not C.DRY else 1
    tr._begin(0, 1, 3, 100)
    tr.mode_now = tr.mode
    times = {}
    for pname, fn in zip(("forward_backward", "weight_grad", "reduce_grad", "adam_ema"),
                         tr.launchers(0, 3)):
        times[pname] = C.timed(lambda: [fn() for _ in range(n)], sync_all) / n * 1e3
    k = 40 if not C.DRY else 2
    st = C.timed(lambda: tr.run(0, k, 100), sync_all)
    return dict(batch=B, steps_per_s=k / st, kernel_ms=times, first_s=t_c, loss=loss,
                cfg=tr.cfg._asdict(), wg=tr.wg._asdict(), splits=tr.S,
                fallbacks=[(c._asdict(), e) for c, e in tr.fallbacks],
                kernels=C.kernel_info(trainer=tr)), grad
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


def markdown(res):
    lines = [f"# fmnumpy CUDA launch-setting sweep ({res['gpu']})", "",
             f"versions: {res['versions']}", "",
             "## sweep (launch-setting variants; the fastest valid one is marked *)", "",
             "| workload | variant | result | check | layout | regs/local | first s |",
             "|---|---|---|---|---|---|---|"]
    best = {w: b["variant"] for w, b in res.get("sweep_best", {}).items()}
    for r in res.get("sweep", []):
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
    return "\n".join(lines + C.errors_markdown(res)) + "\n"


def main(argv=None):
    a, cfg = C.parse_args(__doc__, argv, lambda ap: ap.add_argument(
        "--sweep-budget", type=float, default=0.0, help="seconds for the sweep"))
    if a.sweep_budget:
        cfg["sweep_budget_s"] = a.sweep_budget
    _, _, sync_all, res, dump = C.start(a.smoke, "gpu_sweep", markdown)
    t_all = time.perf_counter()
    try:
        sweep(cfg, sync_all, res, dump)
    except Exception:
        res["errors"].append("sweep: " + traceback.format_exc())
    return C.finish(res, t_all, dump, markdown)


if __name__ == "__main__":
    sys.exit(main())
