"""What the GPU benchmark (gpu.py) and the launch-setting sweep (gpu_sweep.py) share:
workload sizes, models, timing, launch settings applied to a block, and the run record
both write to $OUT (else bench/results/) after every workload.

Importing this module reads ``--smoke``/``--dry`` from sys.argv: a smoke run sets
NUMBA_ENABLE_CUDASIM before numba is first imported, so import it before fmnumpy.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import time

DRY = "--dry" in sys.argv
SMOKE = "--smoke" in sys.argv or DRY
if SMOKE and os.environ.get("FMNUMPY_CUDA_REAL") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"     # before numba is first imported

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy import config  # noqa: E402
from fmnumpy.nn.mlp import MLPSpec, init_params  # noqa: E402
from fmnumpy.train.optim import AdamConfig  # noqa: E402

MODELS = {"A": ((64, 64, 64), "selu"), "B": ((256, 256, 256), "silu")}
SMOKE_MODELS = {"A": ((6,), "selu"), "B": ((9, 17), "silu")}
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
FULL = dict(train=(("B", 256), ("B", 65536)), warmup=50, runs=7, steps=200,
            sample=(("A", "euler", 100), ("B", "euler", 100), ("A", "rk4", 25),
                    ("B", "rk4", 25)),
            particles=1_000_000, sample_runs=3, val_batch=1000, val_particles=4096,
            val_steps=100, budget_s=25.0, sweep_steps=100, sweep_budget_s=200.0,
            logprob=(("A", 25), ("B", 25)), logp_cpu_points=10_000)
QUICK = dict(train=(("B", 12), ("B", 40)), warmup=2, runs=2, steps=3,
             sample=(("A", "euler", 3), ("B", "rk4", 2)), particles=40, sample_runs=2,
             val_batch=12, val_particles=16, val_steps=3, budget_s=60.0, sweep_steps=2,
             sweep_budget_s=600.0, logprob=(("B", 2),), logp_cpu_points=16)


def shrink_tiles():
    """Smoke runs: the tiny tiles of tests/euclidean/test_cuda.py (the simulator is slow)."""
    from fmnumpy.euclidean.cuda import tiles
    config.CUDA_THREADS_PER_BLOCK = 8
    tiles.TILES.update(mlp_tm=2, mlp_tn=4, mlp_bk=4, mlp_bk_small=8, mlp_stage_regs=4,
                       min_blocks=3, mlp_threads_narrow=8, max_registers=0, wg_bm=8, wg_bn=8,
                       wg_tm=4, wg_tn=2, wg_bk=4, wg_target_blocks=24, max_grid=4)
    if DRY:       # tiny static shared memory: the layouts take the dynamic-memory paths
        tiles.SHARED_LIMIT = 512


def spec_of(name):
    hidden, act = (SMOKE_MODELS if SMOKE else MODELS)[name]
    return MLPSpec(2, hidden, act)


def model_of(name):
    """(spec, theta): model ``name`` with the weights every workload starts from."""
    spec = spec_of(name)
    return spec, init_params(spec.sizes, np.random.default_rng(0))


def adam():
    return AdamConfig(lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0, decoupled=False, clip=0.0,
                      ema_decay=0.999, warmup=0, schedule="constant")


# ---- timing ----------------------------------------------------------------------------

def sync(torch_dev):
    from fmnumpy.euclidean.cuda.device import synchronize
    synchronize()
    if torch_dev is not None:
        torch_dev()


def timed(fn, sync_all):
    sync_all()
    t0 = time.perf_counter()
    fn()
    sync_all()
    return time.perf_counter() - t0


def first_solve(spec, theta, x0, method, steps, settings, sync_all):
    """A CudaSampler built under ``settings`` and its first (compiling) solve of x0:
    (sampler, x on the device after it, s to build + copy + solve, s of the solve)."""
    from fmnumpy.euclidean.cuda.device import cuda_module
    from fmnumpy.euclidean.cuda.solvers import CudaSampler
    t0 = time.perf_counter()
    with applied(settings or {}):
        smp = CudaSampler(theta, spec)
        x_d = cuda_module().to_device(x0)
        solve_s = timed(lambda: smp.integrate(x_d, method, steps), sync_all)
    return smp, x_d, time.perf_counter() - t0, solve_s


def timed_solve(smp, x0, method, steps, sync_all):
    """Seconds of one solve from a fresh device copy of x0 (the copy is not timed)."""
    from fmnumpy.euclidean.cuda.device import cuda_module
    x_d = cuda_module().to_device(x0)
    return timed(lambda: smp.integrate(x_d, method, steps), sync_all)


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


# ---- launch settings -------------------------------------------------------------------

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
    from fmnumpy.euclidean.cuda import tiles as T
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


# ---- the run record --------------------------------------------------------------------

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


def start(smoke, stem, markdown):
    """Set up a run: tiny tiles if ``smoke``, torch (TF32 off; the CPU if ``smoke``), the
    record ``res`` and ``dump()``, which writes ``stem``.json and ``stem``.md (from
    ``markdown(res)``) to $OUT, else bench/results/.  Returns (torch, dev, sync_all, res,
    dump)."""
    out_dir = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results")
    os.makedirs(out_dir, exist_ok=True)
    if smoke:
        shrink_tiles()
    import torch
    from fmnumpy.euclidean.cuda import require_gpu
    from fmnumpy.euclidean.cuda.tiles import TILES
    require_gpu()
    real = torch.cuda.is_available() and not smoke
    if real:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "CUDA simulator (smoke run)"
    torch_sync = torch.cuda.synchronize if real else None

    def sync_all():
        sync(torch_sync)

    res = dict(gpu=gpu, smoke=smoke, versions=versions(torch), errors=[],
               config={k: getattr(config, k) for k in dir(config) if k.startswith("CUDA_")})
    res["config"]["tiles"] = dict(TILES)

    def dump():           # after every workload: a later failure or time-out loses nothing
        with open(os.path.join(out_dir, stem + ".json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        with open(os.path.join(out_dir, stem + ".md"), "w") as f:
            f.write(markdown(res))

    return torch, ("cuda" if real else "cpu"), sync_all, res, dump


def parse_args(doc, argv, add_own):
    """(args, cfg): the flags both scripts take (--smoke, --dry) plus the script's own
    (``add_own(ap)``); cfg is a copy of QUICK for a smoke run, else of FULL."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CUDA simulator, CPU torch)")
    ap.add_argument("--dry", action="store_true", help="--smoke with tiny static shared memory")
    add_own(ap)
    a = ap.parse_args(argv)
    a.smoke = a.smoke or a.dry
    a.error = ap.error
    return a, dict(QUICK if a.smoke else FULL)


def errors_markdown(res):
    """The lines of the markdown report that list the run's errors (none: no lines)."""
    return ["", "errors:"] + [f"- {e[:300]}" for e in res["errors"]] if res["errors"] else []


def finish(res, t_all, dump, markdown):
    """Record the total time, write the results, print the report; the exit code."""
    res["total_s"] = time.perf_counter() - t_all
    dump()
    print(markdown(res))
    return 0 if not res["errors"] else 1
