"""Registers and local-memory spills of the benchmark kernels, without a GPU.

    python bench/ptxas.py [--arch sm_90] [--out bench/results/ptxas]

Each kernel of the GPU benchmarks (``bench/gpu.py``: the samplers of models A and
B, the likelihood kernel, training's forward/backward and weight-gradient GEMM) is
built with the production TILES and the layout the launcher would pick first,
compiled to PTX by numba-cuda (``cuda.compile_ptx``, no device needed) and
assembled by ``ptxas -v`` with the launcher's register cap; the table lists
registers, stack frame and spill bytes per kernel.  Needs numba-cuda and the CUDA
toolkit wheels::

    pip install "numba-cuda[cu12]"

Writes <out>.md and <out>.json.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

MODELS = {"A": ((64, 64, 64), "selu", 0), "B": ((256, 256, 256), "silu", 0),
          # FlowMatcher's default model on the CPU: Fourier features of x
          "default": ((128, 128, 128), "silu", 3)}


def ptxas_path():
    """ptxas of the nvidia-cuda-nvcc wheel, else the one on PATH."""
    try:
        import nvidia.cuda_nvcc as nv
        p = pathlib.Path(list(nv.__path__)[0]) / "bin" / "ptxas"
        if p.exists():
            return str(p)
    except ImportError:
        pass
    return "ptxas"


def without_device(cc):
    """Let device functions compile for ``cc`` with no GPU: numba-cuda asks the current
    device for its compute capability when it compiles a device function that a
    kernel calls (``cuda.compile_ptx`` itself takes cc)."""
    from numba.cuda import dispatcher

    class Device:
        compute_capability = cc

    dispatcher.get_current_device = lambda: Device()


def signature(args):
    from numba import typeof, types
    return types.void(*(typeof(a) for a in args))


def kernels():
    """[(workload, kernel name, dispatcher, example args, fastmath, register cap, layout)]."""
    from numba.cuda.random import xoroshiro128p_dtype

    from fmnumpy.euclidean.cuda.device import fastmath
    from fmnumpy.euclidean.cuda.layout import layer_table
    from fmnumpy.euclidean.cuda.likelihood import CudaLikelihood, make_rk_logp
    from fmnumpy.euclidean.cuda.solvers import CudaSampler, make_rk_mlp, tableau_array
    from fmnumpy.euclidean.cuda.step import make_forward_backward, make_weight_grad
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    from fmnumpy.euclidean.cuda.tiles import TILES, register_cap, stage_regs, wg_config
    from fmnumpy.nn.mlp import MLPSpec
    out = []
    regs, kp = stage_regs("mlp"), int(TILES["mlp_kpass"])
    tab = tableau_array("rk4")
    for name, (hidden, act, xf) in MODELS.items():
        spec = MLPSpec(2, hidden, act, x_freqs=xf)
        lay = layer_table(spec.sizes)[0]
        theta = np.zeros(spec.n_params, np.float32)
        x = np.zeros((4, 2), np.float32)
        cfg = CudaSampler.layouts(spec)[0]
        k = make_rk_mlp(cfg, 2, fastmath("sampler"), register_cap(cfg.NT), regs, spec.kind, xf,
                        kp)
        out.append((f"sample {name}", "rk_mlp", k,
                    (theta, lay, tab, x, np.zeros((1, 1, 2), np.float32), 0.0, 0.01, 100, 0,
                     spec.n_freq, np.full(1, -1, np.int64), 1.0), fastmath("sampler"),
                    register_cap(cfg.NT), cfg))
        cfg = CudaLikelihood.layouts(spec)[0]
        cap = register_cap(cfg.NT, per_sm_key="logp_min_blocks_per_sm")
        k = make_rk_logp(cfg, 2, fastmath("sampler"), cap, stage_regs("logp"),
                         spec.kind, xf, kp)
        out.append((f"log_prob {name}", "rk_logp", k,
                    (theta, lay, tab, x, np.zeros(4), 1.0, -0.04, 25, spec.n_freq),
                    fastmath("sampler"), cap, cfg))
    for name, B in (("A", 256), ("B", 256), ("B", 65536), ("default", 256)):
        hidden, act, xf = MODELS[name]
        spec = MLPSpec(2, hidden, act, x_freqs=xf)
        wg = wg_config()
        lay, n_work, _ = layer_table(spec.sizes, B, wg)
        cfg = CudaTrainer.layouts(spec, B)[0]
        fm = fastmath("forward_backward")
        k = make_forward_backward(cfg, 2, fm, register_cap(cfg.NT), stage_regs("fb"), spec.kind,
                                  False, xf, int(TILES["fb_kpass"]))
        args = (np.zeros((5, spec.n_params), np.float32), lay, np.zeros(n_work, np.float32),
                np.zeros(B, xoroshiro128p_dtype), np.zeros((1, 1, 5), np.float32),
                np.zeros((1, 2)), 0, B, spec.n_freq, 0.0, 1.0, 0)
        out.append((f"train {name}/{B}", "forward_backward", k, args, fm, register_cap(cfg.NT),
                    cfg))
    wg = wg_config()
    spec = MLPSpec(2, *MODELS["B"][:2])
    lay, n_work, _ = layer_table(spec.sizes, 65536, wg)
    out.append(("train B/65536", "weight_grad", make_weight_grad(wg, fastmath()),
                (lay, np.zeros(n_work, np.float32), np.zeros((2, spec.n_params), np.float32),
                 65536, 256), fastmath(), 0, wg))
    return out


def ptxas_report(ptx, arch, cap, ptxas):
    """{registers, stack, spill_stores, spill_loads, smem} from ``ptxas -v``."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        pathlib.Path(src).write_text(ptx)
        cmd = [ptxas, "-v", f"-arch={arch}", src, "-o", os.path.join(d, "k.cubin")]
        if cap:
            cmd[2:2] = ["-maxrregcount", str(cap)]
        r = subprocess.run(cmd, capture_output=True, text=True)
    text = r.stdout + r.stderr
    if r.returncode:
        raise RuntimeError(text[-2000:])

    def num(pat):
        m = re.search(pat, text)
        return int(m.group(1)) if m else 0

    return dict(registers=num(r"Used (\d+) registers"), stack=num(r"(\d+) bytes stack frame"),
                spill_stores=num(r"(\d+) bytes spill stores"),
                spill_loads=num(r"(\d+) bytes spill loads"), smem=num(r"(\d+) bytes smem"),
                log=text.strip())


# the sweep's workloads (bench/gpu_sweep.py) and the kernels their settings change
SWEPT = {"sample_A": ("sample A", "log_prob A"), "sample_B": ("sample B", "log_prob B"),
         "train_B": ("train B/65536",)}


def compiled(want, arch, ptxas):
    """Rows of :func:`ptxas_report` for the kernels of the workloads in ``want``
    (None: all), under the TILES and config in force."""
    from numba import cuda
    from fmnumpy.euclidean.cuda import likelihood, mlp, solvers, step
    for f in (mlp.make_block_mlp, solvers.make_rk_mlp, likelihood.make_rk_logp,
              step.make_forward_backward, step.make_weight_grad):
        f.cache_clear()                 # the settings in force, not a cached build
    cc = tuple(int(c) for c in arch.split("_")[1])
    rows = []
    for workload, kname, k, args, fm, cap, cfg in kernels():
        if want is not None and (workload not in want or kname == "weight_grad"):
            continue
        ptx, _ = cuda.compile_ptx(k.py_func, signature(args), fastmath=fm, cc=cc)
        rep = ptxas_report(ptx, arch, cap, ptxas)
        rows.append(dict(workload=workload, kernel=kname, cap=cap, layout=str(cfg), **rep))
        print(f"{workload:16s} {kname:17s} regs {rep['registers']:3d} (cap {cap or '-'}) "
              f"stack {rep['stack']:4d} spill st/ld {rep['spill_stores']}/{rep['spill_loads']}",
              flush=True)
    return rows


def table(rows, variant=False):
    head = "| variant " if variant else ""
    out = [f"{head}| workload | kernel | registers (cap) | stack frame B | spill stores B | "
           "spill loads B | layout |",
           "|---" * (7 + variant) + "|"]
    for r in rows:
        v = f"| {r['variant']} " if variant else ""
        out.append(f"{v}| {r['workload']} | {r['kernel']} | {r['registers']} "
                   f"({r['cap'] or '-'}) | {r['stack']} | {r['spill_stores']} | "
                   f"{r['spill_loads']} | {r['layout']} |")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--sweep", action="store_true",
                    help="also every variant of bench/gpu_sweep.py's SWEEP")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "ptxas"))
    a = ap.parse_args(argv)
    import numba_cuda
    without_device(tuple(int(c) for c in a.arch.split("_")[1]))
    ptxas = ptxas_path()
    rows = compiled(None, a.arch, ptxas)
    swept = []
    if a.sweep:
        from gpu_sweep import SWEEP, applied
        for w, variants in SWEEP.items():
            for name, settings in variants[1:]:
                with applied(settings):
                    for r in compiled(SWEPT[w], a.arch, ptxas):
                        swept.append(dict(r, variant=f"{w}:{name}"))
    ver = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    meta = dict(arch=a.arch, numba_cuda=numba_cuda.__version__,
                ptxas=ver.strip().splitlines()[-1] if ver.strip() else "?")
    pathlib.Path(a.out + ".json").write_text(
        json.dumps(dict(meta=meta, rows=rows, sweep=swept), indent=1))
    lines = [f"# Registers and spills of the GPU benchmark kernels ({a.arch}, no GPU needed)",
             "", f"`python bench/ptxas.py --arch {a.arch}{' --sweep' if a.sweep else ''}`; "
             f"numba-cuda {meta['numba_cuda']}, ptxas {meta['ptxas']}. Each kernel as its "
             "launcher builds it first (production TILES, register cap of "
             "`tiles.register_cap`); spill bytes from `ptxas -v`.", ""] + table(rows)
    if swept:
        lines += ["", "## The sweep's variants (bench/gpu_sweep.py SWEEP)", ""] + \
            table(swept, variant=True)
    pathlib.Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("wrote", a.out + ".md")


if __name__ == "__main__":
    main()
