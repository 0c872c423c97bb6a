"""The CUDA twins against their CPU references (STYLE.md rules 7 and 8).

Dimension letters: B batch, D data dimension, P parameters, N particles.

Where the kernels run:
  * ``FMNUMPY_CUDA_REAL=1``: on the real GPU, in this process;
  * ``NUMBA_ENABLE_CUDASIM=1``: in numba's CUDA simulator, in this process;
  * otherwise (CI, no GPU): ``test_kernels_in_simulator`` runs this same file in a
    child process with ``NUMBA_ENABLE_CUDASIM=1``.  The simulator must be switched
    on before numba is first imported, and the rest of the suite imports numba.

The tile sizes and threads per block are shrunk (``tiny``) so that problems of a
few rows span several blocks, several k-tiles and partial tiles (widths 5, 9, 17
are multiples of nothing).  The simulator is slow: keep the sizes tiny.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from fmnumpy import config
from fmnumpy.errors import FmnumpyError
from fmnumpy.nn.mlp import MLPSpec, Workspace, init_params, input_features, velocity
from fmnumpy.train.optim import (AdamConfig, adam_update, clip_grad_norm, ema_decay_at,
    ema_update)
from fmnumpy.euclidean.paths import STRAIGHT
from fmnumpy.ode.solvers import TABLEAUS
from fmnumpy.euclidean.step import loss_and_grad
from fmnumpy.euclidean.stream import NO_LABELS
from reference import REPO  # noqa: E402

REAL = os.environ.get("FMNUMPY_CUDA_REAL") == "1"
SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
kernels = pytest.mark.skipif(not (REAL or SIM),
                             reason="runs in the simulator child (test_kernels_in_simulator)")
TOL = dict(rtol=2e-5, atol=2e-6)


# ---- without a GPU ---------------------------------------------------------------------

@pytest.mark.skipif(REAL or SIM, reason="this process already runs the kernels")
def test_kernels_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("FMNUMPY_CUDA_REAL", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-W", "ignore", os.path.abspath(__file__)],
                       env=env, capture_output=True, text=True, timeout=900,
                       cwd=REPO)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-10000:] + r.stderr[-3000:]


def test_import_needs_no_gpu():
    """Importing fmnumpy.euclidean.cuda imports neither numba.cuda nor numba-cuda."""
    code = ("import sys, fmnumpy; before = set(sys.modules); import fmnumpy.euclidean.cuda; "
            "print(any(m == 'numba.cuda' or m.startswith('numba_cuda') "
            "for m in set(sys.modules) - before))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_require_gpu_is_one_clear_line(monkeypatch):
    import fmnumpy.euclidean.cuda as fc
    monkeypatch.setattr(fc, "gpu_available", lambda: False)
    with pytest.raises(FmnumpyError) as e:
        fc.require_gpu()
    assert "\n" not in str(e.value) and "--device cpu" in str(e.value)


# ---- the per-element formulas (plain Python, no GPU) -----------------------------------

def test_elements_match_the_cpu_array_code():
    """The scalar formulas the GPU compiles, called as plain Python, against the CPU's
    compiled array code built from them."""
    from fmnumpy.nn.loss import cfm_element, cfm_loss_backward, cfm_loss_forward
    from fmnumpy.nn.mlp import time_feature
    from fmnumpy.train.optim import clip_grad_norm, clip_scale
    from fmnumpy.euclidean.paths import path_element, straight_path
    rng = np.random.default_rng(0)
    x0, x1, v = (rng.standard_normal((4, 3)) for _ in range(3))
    t = rng.random(4)
    xt, ut, dv = np.empty((4, 3)), np.empty((4, 3)), np.empty((4, 3))
    straight_path(x0, x1, t, 0.1, xt, ut)
    cfm_loss_backward(v, ut, dv)
    sq = 0.0
    for i in range(4):
        for d in range(3):
            e_xt, e_ut = path_element(x0[i, d], x1[i, d], t[i], 0.1)
            assert np.isclose(e_xt, xt[i, d]) and np.isclose(e_ut, ut[i, d])
            s, g = cfm_element(v[i, d], ut[i, d], 2.0 / 12)
            sq += s
            assert np.isclose(g, dv[i, d])
    assert np.isclose(sq / 12, cfm_loss_forward(v, ut))
    X = np.empty((4, 2 + 1 + 6))
    input_features(x0[:, :2].copy(), t, (3, 0, np.zeros((0, 2))), X)
    for k in range(3):
        sk, ck = time_feature(t[0], k)
        assert np.isclose(sk, X[0, 3 + 2 * k]) and np.isclose(ck, X[0, 4 + 2 * k])
    for max_norm in (0.0, 0.5, 100.0):
        g = v.ravel().copy()
        n = clip_grad_norm(g, max_norm)
        np.testing.assert_allclose(g, v.ravel() * clip_scale(n, max_norm), rtol=1e-15)


def test_spiral_point_is_the_2spirals_formula():
    """Replays the draws of datasets.two_spirals for n = 2 (one point per arm)."""
    from fmnumpy.euclidean import datasets
    from fmnumpy.euclidean.datasets import spiral_point
    for seed in range(5):
        ref = datasets.two_spirals(2, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        u_s, u_x, u_y = rng.random(), rng.random(), rng.random()
        n = rng.standard_normal((2, 2))
        got = np.array([spiral_point(u_s, u_x, u_y, 0.25, n[0, 0], n[0, 1]),
                        spiral_point(u_s, u_x, u_y, 0.75, n[1, 0], n[1, 1])])
        assert np.allclose(np.sort(got, axis=0), np.sort(ref, axis=0))


# ---- kernels ---------------------------------------------------------------------------

TINY = dict(mlp_tm=2, mlp_tn=4, mlp_bk=4, mlp_bk_small=8, mlp_stage_regs=16, min_blocks=3,
            mlp_threads_narrow=8, max_registers=0, wg_bm=8, wg_bn=8, wg_tm=4, wg_tn=2, wg_bk=4,
            wg_target_blocks=24, max_grid=4, mlp_resident=0, mlp_dynamic_shared=0,
            mlp_threads_wide=0, fb_threads=0, fb_stage_regs=0, logp_stage_regs=0)


def shrink(monkeypatch, stage_regs):
    from fmnumpy.euclidean.cuda import tiles
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 8)
    # exact math at the tight tolerances here; fastmath: test_default_tiles_on_the_gpu
    monkeypatch.setattr(config, "CUDA_FASTMATH_SAMPLER", False)
    for k, v in dict(TINY, mlp_stage_regs=stage_regs).items():
        monkeypatch.setitem(tiles.TILES, k, v)


@pytest.fixture(params=[16, 2], ids=["prefetch", "chunked"])
def tiny(monkeypatch, request):
    """Tiny launch settings: a handful of threads, tiles of 2-8; W staged through 16
    registers (whole k-tiles, the next one prefetched) or 2 (k-tiles in chunks)."""
    shrink(monkeypatch, request.param)


@pytest.fixture(params=[(16, 4), (2, 1)], ids=["prefetch-kpass4", "chunked-kpass1"])
def tiny_k(monkeypatch, request):
    """:func:`tiny` with the products' k per pass (TILES mlp_kpass, fb_kpass) 4 or 1."""
    from fmnumpy.euclidean.cuda import tiles
    shrink(monkeypatch, request.param[0])
    monkeypatch.setitem(tiles.TILES, "mlp_kpass", request.param[1])
    monkeypatch.setitem(tiles.TILES, "fb_kpass", request.param[1])


@pytest.fixture
def tiny1(monkeypatch):
    """:func:`tiny` with one staging setting (the slow likelihood tests: the staging
    is the sampler's, tested there with both)."""
    shrink(monkeypatch, 16)


SPECS = {   # widths that are multiples of no tile; time features on and off; and
    # widths equal to the padded width (whole tiles: the fast staging path)
    "silu": MLPSpec(2, (9, 17), "silu", n_freq=1),
    "selu": MLPSpec(2, (5,), "selu", n_freq=0),
    "full": MLPSpec(2, (8, 8), "tanh", n_freq=0),
    # plane-wave features of x (the CPU's default model)
    "fourier": MLPSpec(2, (9, 7), "silu", n_freq=1, x_freqs=2),
}


def batch(B, D, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, D)).astype(np.float32),
            (rng.standard_normal((B, D)) * 2).astype(np.float32),
            rng.random(B).astype(np.float32))


def cpu_loss_and_grad(spec, theta, x0, x1, t, sigma_min, y=NO_LABELS):
    B, D = x0.shape
    ws = Workspace(spec.sizes, B)
    xt, ut, dv = (np.zeros((B, D), np.float32) for _ in range(3))
    dtheta = np.zeros_like(theta)
    no_noise = np.zeros((0, D), np.float32)              # the straight path draws none
    loss = loss_and_grad(theta, dtheta, (spec.sizes, spec.kind, spec.feats),
                         (STRAIGHT, sigma_min), (x0, x1, t, no_noise, y),
                         (xt, ut, dv) + ws.buffers())
    return loss, dtheta


@kernels
@pytest.mark.parametrize("name", list(SPECS))
def test_loss_and_grad(tiny_k, name):
    """Fused forward/backward + weight-gradient GEMM + reduction vs step.loss_and_grad."""
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    spec = SPECS[name]
    B = 11
    theta = init_params(spec.sizes, np.random.default_rng(1))
    x0, x1, t = batch(B, spec.dim, 2)
    tr = CudaTrainer(spec, AdamConfig(), B)
    assert tr.S > 1 and -(-B // tr.cfg.PB) > 1          # several splits and row blocks
    tr.set_state(theta, 0 * theta, 0 * theta, theta)
    loss, dtheta = tr.loss_and_grad(x0, x1, t)
    ref_loss, ref = cpu_loss_and_grad(spec, theta, x0, x1, t, 0.0)
    print("max |dtheta - ref|", np.abs(dtheta - ref).max())
    assert np.isclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(dtheta, ref, rtol=1e-4, atol=1e-6)


COND = MLPSpec(2, (9, 6), "silu", n_freq=1, n_classes=3, x_freqs=1)   # labels 0..2, null 3


@kernels
def test_loss_and_grad_with_labels(tiny1):
    """A conditional network: each row's class (the null class included) as a one-hot
    input from the last column of the batch, against step.loss_and_grad."""
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    B = 11
    theta = init_params(COND.sizes, np.random.default_rng(1))
    x0, x1, t = batch(B, 2, 2)
    y = np.random.default_rng(3).integers(0, 4, B)
    tr = CudaTrainer(COND, AdamConfig(), B)
    tr.set_state(theta, 0 * theta, 0 * theta, theta)
    loss, dtheta = tr.loss_and_grad(x0, x1, t, y)
    ref_loss, ref = cpu_loss_and_grad(COND, theta, x0, x1, t, 0.0, y)
    assert np.isclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(dtheta, ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(FmnumpyError, match="labels"):
        tr.loss_and_grad(x0, x1, t)


@kernels
@pytest.mark.parametrize("name", ["silu", "full"])
def test_loss_and_grad_dynamic_shared(tiny, monkeypatch, name):
    """forward_backward with [hs | ws] in dynamic shared memory."""
    from fmnumpy.euclidean.cuda import tiles
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    monkeypatch.setitem(tiles.TILES, "mlp_dynamic_shared", 8192)
    small_static_limit(monkeypatch)
    spec = SPECS[name]
    B = 11
    theta = init_params(spec.sizes, np.random.default_rng(1))
    x0, x1, t = batch(B, spec.dim, 2)
    tr = CudaTrainer(spec, AdamConfig(), B)
    assert tr.cfg.DYN > 0 and -(-B // tr.cfg.PB) > 1
    tr.set_state(theta, 0 * theta, 0 * theta, theta)
    loss, dtheta = tr.loss_and_grad(x0, x1, t)
    assert not tr.fallbacks
    ref_loss, ref = cpu_loss_and_grad(spec, theta, x0, x1, t, 0.0)
    assert np.isclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(dtheta, ref, rtol=1e-4, atol=1e-6)


@kernels
def test_train_steps(tiny):
    """Three AdamW steps with clipping active, sigma_min > 0, and the EMA, against
    the CPU step assembled from its parts."""
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    spec = SPECS["silu"]
    B, n, sigma_min = 6, 3, 0.1
    opt = AdamConfig(lr=1e-2, weight_decay=0.1, decoupled=True, clip=0.5, ema_decay=0.9,
                     warmup=2, schedule="cosine", lr_min=1e-4)
    theta = init_params(spec.sizes, np.random.default_rng(3))
    data = [batch(B, spec.dim, 10 + k) for k in range(n)]
    tr = CudaTrainer(spec, opt, B, path=(STRAIGHT, sigma_min))
    tr.set_state(theta, 0 * theta, 0 * theta, theta.copy())
    losses, bad = tr.run_arrays(np.stack([d[0] for d in data]), np.stack([d[1] for d in data]),
                                np.stack([d[2] for d in data]), step=0, total=10)
    got = tr.get_state()

    from fmnumpy.train.optim import learning_rate
    th, m, v, ema = theta.copy(), 0 * theta, 0 * theta, theta.copy()
    b1, b2 = opt.betas
    ref_losses = []
    for k in range(1, n + 1):
        x0, x1, t = data[k - 1]
        loss, g = cpu_loss_and_grad(spec, th, x0, x1, t, sigma_min)
        ref_losses.append(loss)
        clip_grad_norm(g, opt.clip)
        adam_update(th, g, m, v, k, learning_rate(k, opt.lr, 10, opt.warmup, opt.schedule,
                                                  opt.lr_min),
                    b1, b2, opt.eps, opt.weight_decay, opt.decoupled)
        ema_update(ema, th, ema_decay_at(k, opt.ema_decay))
    assert bad == 0
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for name, ref in (("theta", th), ("m", m), ("v", v), ("ema", ema)):
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-6, err_msg=name)


@kernels
def test_nonfinite_loss_keeps_the_last_good_weights(tiny):
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    spec = SPECS["selu"]
    B = 5
    theta = init_params(spec.sizes, np.random.default_rng(4))
    data = [batch(B, spec.dim, 20 + k) for k in range(3)]
    data[1][1][0, 0] = np.nan                      # step 2 sees a NaN data point
    tr = CudaTrainer(spec, AdamConfig(), B)
    tr.set_state(theta, 0 * theta, 0 * theta, theta)
    losses, bad = tr.run_arrays(*(np.stack([d[i] for d in data]) for i in range(3)))
    assert bad == 2 and np.isfinite(losses[0]) and not np.isfinite(losses[1])
    after1 = CudaTrainer(spec, AdamConfig(), B)
    after1.set_state(theta, 0 * theta, 0 * theta, theta)
    after1.run_arrays(*(np.stack([d[i] for d in data[:1]]) for i in range(3)))
    np.testing.assert_array_equal(tr.get_state()["theta"], after1.get_state()["theta"])


@kernels
@pytest.mark.parametrize("data", ["2spirals", "8gaussians"])
def test_device_data_streams(tiny, data, monkeypatch):
    """x0, t (and 2spirals' x1) drawn on the device, or x1 streamed per chunk:
    finite losses, the same for the same seed, a chunk boundary crossed; the time
    power changes them."""
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    from fmnumpy.euclidean.datasets import make_sampler
    from fmnumpy.euclidean.stream import BatchStream
    spec = SPECS["selu"]
    theta = init_params(spec.sizes, np.random.default_rng(5))
    monkeypatch.setattr(config, "DATA_CHUNK_STEPS", 2)      # chunks of two steps
    runs = []
    for power in (2.0, 2.0, 1.0):          # paths.time_from_uniform of the device's uniforms
        stream = BatchStream(make_sampler(data), 2, 4, 7, np.float32)
        tr = CudaTrainer(spec, AdamConfig(), 4, stream=stream, spirals=data == "2spirals",
                         seed=7, time_power=power)
        tr.set_state(theta, 0 * theta, 0 * theta, theta)
        losses, step = [], 0
        while step < 3:
            n = tr.span(step, 3 - step)
            ls, bad = tr.run(step, n, 3)
            assert bad == 0
            losses += list(ls)
            step += n
        runs.append(losses)
    assert np.all(np.isfinite(runs[0])) and runs[0] == runs[1]
    assert runs[2] != runs[0]              # the time draw reaches the step


def reference_integrate(theta, spec, x0, method, steps, record=0):
    """A plain loop over the Butcher tableau (solvers.py's equations) with mlp.velocity."""
    tab = TABLEAUS[method]
    x = x0.astype(np.float32).copy()
    N, D = x.shape
    ws = Workspace(spec.sizes, N)
    h = 1.0 / steps
    traj = [x.copy()]
    every = steps // record if record else 0
    for n in range(steps):
        t = n * h
        K = []
        for i in range(tab.stages):
            xs = (x + h * sum(tab.A[i, j] * K[j] for j in range(i))).astype(np.float32)
            ts = np.full(N, t + tab.c[i] * h, dtype=np.float32)
            K.append(velocity(theta, spec.sizes, spec.kind, spec.feats, xs, ts,
                              ws.X, ws.A, ws.Z).copy())
        x = (x + h * sum(tab.b[i] * K[i] for i in range(tab.stages))).astype(np.float32)
        if record and (n + 1) % every == 0:
            traj.append(x.copy())
    return (x, np.stack(traj)) if record else x


@kernels
@pytest.mark.parametrize("method,name", [(m, "silu") for m in TABLEAUS] + [("euler", "full"),
                                                                         ("rk4", "fourier")])
def test_sampler(tiny_k, method, name):
    from fmnumpy.euclidean.cuda.solvers import cuda_sample
    spec = SPECS[name]
    theta = init_params(spec.sizes, np.random.default_rng(6))
    x0 = np.random.default_rng(7).standard_normal((7, 2)).astype(np.float32)
    got = cuda_sample(theta, spec, x0, method, 2)
    np.testing.assert_allclose(got, reference_integrate(theta, spec, x0, method, 2), **TOL)


# block layouts beyond the streamed one in static shared memory (tiles.mlp_config)
LAYOUTS = {"resident": dict(mlp_resident=1),
           "dynamic": dict(mlp_dynamic_shared=8192),
           "resident_dynamic": dict(mlp_resident=1, mlp_dynamic_shared=8192, mlp_tm=4)}


def small_static_limit(monkeypatch):
    """Static shared memory of 256 bytes: tiny layouts need dynamic shared memory."""
    from fmnumpy.euclidean.cuda import tiles
    monkeypatch.setattr(tiles, "SHARED_LIMIT", 256)


@kernels
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("method,name", [("rk4", "silu"), ("euler", "full")])
def test_sampler_layouts(tiny, monkeypatch, layout, method, name):
    """Resident weights (one load for all steps) and dynamic shared memory
    ([hs | ws] in one buffer) give the samples of the reference."""
    from numba import cuda
    from fmnumpy.euclidean.cuda import tiles
    from fmnumpy.euclidean.cuda.solvers import CudaSampler
    for k, v in LAYOUTS[layout].items():
        monkeypatch.setitem(tiles.TILES, k, v)
    if "dynamic" in layout:
        small_static_limit(monkeypatch)
    spec = SPECS[name]
    theta = init_params(spec.sizes, np.random.default_rng(6))
    x0 = np.random.default_rng(7).standard_normal((21, 2)).astype(np.float32)
    smp = CudaSampler(theta, spec)
    cfg = smp.cfg
    assert cfg.RES == ("resident" in layout) and (cfg.DYN > 0) == ("dynamic" in layout)
    assert -(-21 // cfg.PB) > 1                 # several blocks
    x_d = cuda.to_device(x0)
    smp.integrate(x_d, method, 2)
    assert not smp.fallbacks and smp.cfg == cfg
    np.testing.assert_allclose(x_d.copy_to_host(),
                               reference_integrate(theta, spec, x0, method, 2), **TOL)


@kernels
@pytest.mark.parametrize("labels,guidance", [(None, 1.0), ("given", 1.0), ("given", 2.5)])
def test_sampler_with_labels_and_guidance(tiny1, labels, guidance):
    """A conditional network on the GPU: the null class (labels=None), the given
    labels, and classifier-free guidance (two rows per particle: v_y and v_null),
    against solvers.integrate_mlp."""
    from fmnumpy.euclidean.cuda.solvers import cuda_sample
    from fmnumpy.euclidean.integrate import integrate_mlp
    theta = init_params(COND.sizes, np.random.default_rng(4))
    x0 = np.random.default_rng(5).standard_normal((7, 2)).astype(np.float32)
    y = None if labels is None else np.random.default_rng(6).integers(0, 3, 7)
    got = cuda_sample(theta, COND, x0, "heun", 2, labels=y, guidance=guidance)
    ref = integrate_mlp(theta, COND, x0, "heun", 2, labels=y, guidance=guidance)
    np.testing.assert_allclose(got, ref, **TOL)


MAPS = {"silu": MLPSpec(2, (9, 17), "silu", n_freq=1, flow_map=True),
        "fourier": MLPSpec(2, (9, 7), "silu", n_freq=2, x_freqs=2, flow_map=True)}


@kernels
@pytest.mark.parametrize("name", list(MAPS))
def test_jumps_of_a_flow_map(tiny1, name):
    """The GPU's jumps (Euler whose network sees the gap h) against flowmap.jump, with
    the states between the jumps (3 jumps; 1 without them); RK4 on the map's diagonal
    against the CPU's."""
    from fmnumpy.euclidean.cuda.solvers import cuda_sample
    from fmnumpy.euclidean.flowmap import jump
    spec = MAPS[name]
    theta = init_params(spec.sizes, np.random.default_rng(3))
    x0 = np.random.default_rng(4).standard_normal((9, 2)).astype(np.float32)
    got, traj = cuda_sample(theta, spec, x0, "jump", 3, record=3)
    ref, ref_traj = jump(theta, spec, x0, 3, record=True)
    np.testing.assert_allclose(got, ref, **TOL)
    np.testing.assert_allclose(traj, ref_traj, **TOL)
    np.testing.assert_allclose(cuda_sample(theta, spec, x0, "jump", 1), jump(theta, spec, x0, 1),
                               **TOL)
    np.testing.assert_allclose(cuda_sample(theta, spec, x0, "rk4", 2),
                               reference_integrate(theta, spec, x0, "rk4", 2), **TOL)


@kernels
def test_a_flowmatcher_map_jumps_on_the_gpu(tiny1):
    from fmnumpy import FlowMatcher
    fm = FlowMatcher(objective="meanflow", hidden=(9,), seed=0).fit("moons", steps=3,
                                                                    batch_size=8)
    cpu = fm.sample(13, steps=2, seed=5)
    gpu = fm.set_params(device="cuda").sample(13, steps=2, seed=5)
    np.testing.assert_allclose(gpu, cpu, **TOL)


@kernels
def test_sampler_trajectory(tiny):
    from fmnumpy.euclidean.cuda.solvers import cuda_sample
    spec = SPECS["selu"]
    theta = init_params(spec.sizes, np.random.default_rng(8))
    x0 = np.random.default_rng(9).standard_normal((9, 2)).astype(np.float32)
    got, traj = cuda_sample(theta, spec, x0, "heun", 4, record=2)
    ref, ref_traj = reference_integrate(theta, spec, x0, "heun", 4, record=2)
    assert traj.shape == (3, 9, 2)
    np.testing.assert_allclose(got, ref, **TOL)
    np.testing.assert_allclose(traj, ref_traj, **TOL)


# ---- the exact likelihood (cuda/likelihood.py) against the float64 CPU oracle -----------

LOGP_SPECS = dict(SPECS, d3=MLPSpec(3, (6,), "tanh", n_freq=1, x_freqs=1))   # G = 4 rows


def cpu_logp(theta, spec, x, method, steps, backward):
    """(x(t1), l(t1)) of likelihood.integrate_logp in float64: the oracle."""
    from fmnumpy.euclidean.likelihood import integrate_logp, mlp_div_field, mlp_div_params
    l0 = np.linspace(-1.0, 1.0, x.shape[0])
    t0, t1 = (1.0, 0.0) if backward else (0.0, 1.0)
    params = mlp_div_params(theta.astype(np.float64), spec, x.shape[0])
    xe, le, _ = integrate_logp(mlp_div_field, params, x.astype(np.float64), l0, t0, t1,
                               method, steps)
    return l0, (t0, t1), xe, le


@kernels
@pytest.mark.parametrize("method,name,backward", [("rk4", "silu", False), ("euler", "full", True),
                                                  ("heun", "selu", True),
                                                  ("midpoint", "fourier", False),
                                                  ("heun", "d3", True)])
def test_logp_kernel(tiny1, method, name, backward):
    """The fused augmented solve [x, l] (forward-mode divergence in the block MLP's
    row groups) against the CPU's float64 solve, forwards and backwards in time."""
    from fmnumpy.euclidean.cuda.likelihood import CudaLikelihood, cuda_solve_logp
    spec = LOGP_SPECS[name]
    theta = init_params(spec.sizes, np.random.default_rng(6))
    N = 5
    x = np.random.default_rng(7).standard_normal((N, spec.dim)).astype(np.float32)
    steps = 1 if method == "rk4" else 2
    l0, (t0, t1), ref_x, ref_l = cpu_logp(theta, spec, x, method, steps, backward)
    cfg = CudaLikelihood(theta, spec).cfg
    assert cfg.TM % (spec.dim + 1) == 0 and -(-N // (cfg.PB // (spec.dim + 1))) > 1
    got_x, got_l = cuda_solve_logp(theta, spec, x, l0, method, steps, t0, t1)
    assert got_l.dtype == np.float64
    print("max |dl|", np.abs(got_l - ref_l).max())
    np.testing.assert_allclose(got_x, ref_x, **TOL)
    np.testing.assert_allclose(got_l, ref_l, rtol=1e-5, atol=1e-5)


@kernels
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_logp_kernel_layouts(tiny1, monkeypatch, layout):
    """Resident weights and dynamic shared memory with D + 1 rows per particle."""
    from fmnumpy.euclidean.cuda import tiles
    from fmnumpy.euclidean.cuda.likelihood import CudaLikelihood, cuda_solve_logp
    for k, v in LAYOUTS[layout].items():
        monkeypatch.setitem(tiles.TILES, k, v)
    if "dynamic" in layout:
        small_static_limit(monkeypatch)
    spec = SPECS["silu"]
    theta = init_params(spec.sizes, np.random.default_rng(6))
    x = np.random.default_rng(8).standard_normal((7, 2)).astype(np.float32)
    cfg = CudaLikelihood(theta, spec).cfg
    assert cfg.RES == ("resident" in layout) and (cfg.DYN > 0) == ("dynamic" in layout)
    assert -(-7 // (cfg.PB // 3)) > 1                   # several blocks
    l0, (t0, t1), ref_x, ref_l = cpu_logp(theta, spec, x, "midpoint", 1, True)
    got_x, got_l = cuda_solve_logp(theta, spec, x, l0, "midpoint", 1, t0, t1)
    np.testing.assert_allclose(got_x, ref_x, **TOL)
    np.testing.assert_allclose(got_l, ref_l, rtol=1e-5, atol=1e-5)


@kernels
def test_flowmatcher_likelihood_on_the_gpu(tiny1):
    """FlowMatcher(device="cuda"): log_prob, sample(return_logprob=True) and
    density_grid run the kernel and agree with the same model on the CPU."""
    from fmnumpy import FlowMatcher
    fm = FlowMatcher(hidden=(6,), activation="silu", seed=2, x_freqs=1).fit(
        "moons", steps=3, batch_size=8)
    x = np.random.default_rng(3).standard_normal((4, 2))
    cpu = fm.log_prob(x, method="midpoint", steps=1)
    x1_c, lp1_c = fm.sample(3, method="euler", steps=2, return_logprob=True)
    grid_c = fm.density_grid(lim=2.0, n_grid=2, method="euler", steps=1)[2]
    fm.set_params(device="cuda")
    np.testing.assert_allclose(fm.log_prob(x, method="midpoint", steps=1), cpu, rtol=1e-5,
                               atol=1e-5)
    x1_g, lp1_g = fm.sample(3, method="euler", steps=2, return_logprob=True)
    np.testing.assert_allclose(x1_g, x1_c, **TOL)
    np.testing.assert_allclose(lp1_g, lp1_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fm.density_grid(lim=2.0, n_grid=2, method="euler", steps=1)[2],
                               grid_c, rtol=1e-5, atol=1e-5)
    for bad in (dict(method="dopri5"), dict(dtype="float64")):
        with pytest.raises(FmnumpyError) as e:
            fm.log_prob(x, **bad)
        assert "\n" not in str(e.value) and "cpu" in str(e.value)


@kernels
@pytest.mark.skipif(not REAL, reason="default tile sizes: real GPU only (slow in the simulator)")
@pytest.mark.parametrize("hidden,activation", [((64, 64, 64), "selu"), ((256, 256, 256), "silu")])
def test_default_tiles_on_the_gpu(hidden, activation):
    """The production configuration: models A and B, a batch that is no multiple of
    any tile, gradient and samples against the CPU."""
    from fmnumpy.euclidean.cuda.solvers import cuda_sample
    from fmnumpy.euclidean.cuda.stepper import CudaTrainer
    spec = MLPSpec(2, hidden, activation)
    theta = init_params(spec.sizes, np.random.default_rng(10))
    B = 1000
    x0, x1, t = batch(B, 2, 11)
    tr = CudaTrainer(spec, AdamConfig(), B)
    tr.set_state(theta, 0 * theta, 0 * theta, theta)
    loss, g = tr.loss_and_grad(x0, x1, t)
    ref_loss, ref = cpu_loss_and_grad(spec, theta, x0, x1, t, 0.0)
    assert np.isclose(loss, ref_loss, rtol=1e-4)
    np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())
    xs = np.random.default_rng(12).standard_normal((3001, 2)).astype(np.float32)
    np.testing.assert_allclose(cuda_sample(theta, spec, xs, "rk4", 5),
                               reference_integrate(theta, spec, xs, "rk4", 5),
                               rtol=1e-4, atol=1e-4)
    from fmnumpy.euclidean.cuda.likelihood import cuda_solve_logp
    l0, (t0, t1), ref_x, ref_l = cpu_logp(theta, spec, xs, "rk4", 5, True)
    got_x, got_l = cuda_solve_logp(theta, spec, xs, l0, "rk4", 5, t0, t1)
    np.testing.assert_allclose(got_x, ref_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_l, ref_l, rtol=1e-4, atol=1e-4)


@kernels
def test_cuda_stepper_trains_a_flowmatcher(tiny, tmp_path, monkeypatch):
    """train.run with the GPU stepper (FlowMatcher(device="cuda").fit): schedule
    across chunks, callbacks see the current weights, checkpoints are written,
    the CPU can sample the result."""
    from fmnumpy import FlowMatcher
    monkeypatch.setattr(config, "DATA_CHUNK_STEPS", 2)
    fm = FlowMatcher(hidden=(5,), activation="tanh", warmup=1, seed=3, device="cuda")
    fm.fit("moons", steps=5, batch_size=4, until=0)
    theta0 = fm.theta_.copy()
    seen = []
    ckpt = str(tmp_path / "c.npz")
    fm.fit("moons", steps=5, batch_size=4, warm_start=True, checkpoint=ckpt,
           checkpoint_every=2, callback=lambda m, k: seen.append((k, m.theta_.copy())),
           callback_every=3)
    assert fm.step_ == 5 and len(fm.losses_) == 5 and np.all(np.isfinite(fm.losses_))
    assert [k for k, _ in seen] == [3] and not np.array_equal(seen[0][1], theta0)
    assert not np.array_equal(seen[0][1], fm.theta_)
    assert FlowMatcher.load(ckpt).step_ == 5
    assert np.all(np.isfinite(fm.velocity(np.zeros((3, 2)), 0.5)))


@kernels
def test_flowmatcher_conditional_on_the_gpu(tiny1, monkeypatch):
    """fit(labels=True) with label dropout on the GPU: the host's batches and labels,
    the CPU's losses and weights; then guided samples agree with the CPU's."""
    from fmnumpy import FlowMatcher
    monkeypatch.setattr(config, "DATA_CHUNK_STEPS", 2)
    kw = dict(hidden=(5,), activation="tanh", warmup=1, seed=3, x_freqs=0, label_dropout=0.3)
    gpu = FlowMatcher(device="cuda", **kw).fit("moons", steps=3, batch_size=4, labels=True)
    cpu = FlowMatcher(**kw).fit("moons", steps=3, batch_size=4, labels=True)
    np.testing.assert_allclose(gpu.losses_, cpu.losses_, rtol=1e-4)
    np.testing.assert_allclose(gpu.theta_, cpu.theta_, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gpu.sample(5, method="euler", steps=2, labels=1, guidance=2.0),
                               cpu.sample(5, method="euler", steps=2, labels=1, guidance=2.0),
                               rtol=1e-3, atol=1e-4)


@kernels
def test_host_batches_train_from_a_source_with_exact_ot(tiny1, monkeypatch):
    """A source, a coupling and the sigma path on the GPU: the host's batches (x0 from
    8gaussians, exact OT pairs; the path's eps) uploaded per chunk; the losses of the
    first steps are the CPU's."""
    from fmnumpy import FlowMatcher
    monkeypatch.setattr(config, "DATA_CHUNK_STEPS", 2)
    # and the paths: constant sigma, the Schrodinger bridge (both with the host's eps), cosine
    for extra in (dict(coupling="ot"), dict(sigma=0.3), dict(path="sb", sb_sigma=0.5),
                  dict(path="cosine")):
        kw = dict(hidden=(5,), activation="tanh", warmup=1, seed=3, x_freqs=0, **extra)
        gpu = FlowMatcher(device="cuda", **kw).fit("moons", steps=3, batch_size=4,
                                                   source="8gaussians")
        cpu = FlowMatcher(**kw).fit("moons", steps=3, batch_size=4, source="8gaussians")
        np.testing.assert_allclose(gpu.losses_, cpu.losses_, rtol=1e-4)
        np.testing.assert_allclose(gpu.theta_, cpu.theta_, rtol=1e-3, atol=1e-5)
