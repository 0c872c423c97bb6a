"""The seams between the CPU core, the GPU twins and the API: one training state,
one loop with the stepper passed in, one registry of solvers, one configuration
(get_params / set_params), data read once, no import cycle and no compiled
function with more than 12 parameters; and five training steps of the compiled
code against a float64 NumPy reference of the whole step.

Dimension letters: B batch, D data dimension, P parameters."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from fmnumpy import FlowMatcher, FmnumpyError, config
from fmnumpy.euclidean import datasets, reflow as reflow_mod, stream as train
from fmnumpy.train import loop
from fmnumpy.nn.mlp import MLPSpec, init_params
from fmnumpy.train.optim import AdamConfig, ema_decay_at
from fmnumpy.euclidean.paths import SB, STRAIGHT
from fmnumpy.train.times import time_from_uniform
from fmnumpy.train.state import EMA, M, THETA, V, TrainState
from fmnumpy.nn.mlp import StepWork
from fmnumpy.euclidean.step import (SplitWork, loss_and_grad, split_loss_and_grad,
    split_train_step, train_step)
from fmnumpy.train.update import hyper_at
from fmnumpy.euclidean.stream import NO_LABELS

from reference import TINY, run, train_step_ref

from reference import REPO  # noqa: E402
PKG = os.path.join(REPO, "fmnumpy")


def tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fitted(**kw):
    return FlowMatcher(hidden=(8,), seed=0, warmup=2, **kw).fit("8gaussians", steps=4,
                                                                 batch_size=8)


# ---- the whole step against float64 NumPy ----------------------------------------------

@pytest.mark.parametrize("threads", [1, 3])   # the serial step, the data-parallel one
@pytest.mark.parametrize("kind_name,decoupled,wd,clip", [
    ("tanh", True, 0.1, 0.05),          # AdamW, every step clipped
    ("silu", False, 0.01, 0.0),         # Adam with L2, no clipping
])
def test_five_train_steps_match_a_float64_reference(kind_name, decoupled, wd, clip, threads):
    rng = np.random.default_rng(4)
    spec = MLPSpec(3, (6, 5), kind_name, n_freq=1)
    theta = init_params(spec.sizes, rng, np.float64) * 1.5
    opt = AdamConfig(lr=3e-2, weight_decay=wd, decoupled=decoupled, clip=clip, warmup=2,
                     schedule="cosine", ema_decay=0.9)
    state = TrainState(theta, dtype=np.float64)
    if threads == 1:
        step, work = train_step, StepWork(spec.sizes, 7, np.float64).buffers()
    else:
        step, work = split_train_step, SplitWork(spec.sizes, 7, threads, np.float64).buffers()
    ref = [theta.copy(), np.zeros_like(theta), np.zeros_like(theta), theta.copy()]
    net = (spec.sizes, spec.kind, spec.feats)
    for k in range(1, 6):
        x0, x1 = rng.standard_normal((7, 3)), rng.standard_normal((7, 3)) * 2
        t = rng.random(7)
        hyper = hyper_at(opt, k, 5)
        batch = (x0, x1, t, np.zeros((0, 3)), NO_LABELS)
        loss, _ = step(state.buf, net, (STRAIGHT, 0.0), batch, hyper, work)
        *ref, ref_loss = train_step_ref(*ref, spec.sizes, spec.kind, spec.n_freq, (x0, x1, t),
                                        k, opt, hyper[1], ema_decay_at(k, opt.ema_decay))
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        for row, want in zip((THETA, M, V, EMA), ref):
            diff = np.abs(state.buf[row] - want).max()
            print(f"step {k} row {row}: max |fmnumpy - reference| = {diff:.2e}")
            assert diff <= 1e-10
    assert np.abs(state.buf[THETA] - theta).max() > 1e-3        # the steps moved the weights


@pytest.mark.parametrize("threads", [2, 3, 7, 9])
def test_the_data_parallel_gradient_is_the_serial_one(threads):
    """Slices of 7 rows (the last ones short or, with 9 threads, empty) on the
    conditional network and the noisy Schrodinger-bridge path: the same loss and
    gradient as one serial pass, to rounding."""
    rng = np.random.default_rng(5)
    spec = MLPSpec(2, (6, 5), "silu", n_freq=1, n_classes=3, x_freqs=1)
    theta = init_params(spec.sizes, rng, np.float64) * 1.5
    x0, x1, t = rng.standard_normal((7, 2)), rng.standard_normal((7, 2)), rng.random(7)
    batch = (x0, x1, t, rng.standard_normal((7, 2)), rng.integers(0, 4, 7))
    net, path = (spec.sizes, spec.kind, spec.feats), (SB, 0.5)
    g1, g2 = np.zeros_like(theta), np.full_like(theta, 7.0)          # g2 starts stale
    L1 = loss_and_grad(theta, g1, net, path, batch, StepWork(spec.sizes, 7, np.float64).buffers())
    split = SplitWork(spec.sizes, 7, threads, np.float64)
    split.grads[:] = 3.0                                               # stale slices too
    L2 = split_loss_and_grad(theta, g2, net, path, batch, split.buffers())
    assert L2 == pytest.approx(L1, rel=1e-13)
    assert np.abs(g2 - g1).max() < 1e-13 * (1 + np.abs(g1).max())


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_chunks_of_steps_equal_one_step_at_a_time(threads):
    """CpuStepper.run takes a data chunk's steps per compiled call; over 70 steps
    (across a chunk boundary, with a cosine schedule and EMA warm-up) the state and
    the losses are bit for bit those of train_step called once per step."""
    from fmnumpy.euclidean.step import CpuStepper
    spec = MLPSpec(2, (8, 8), "silu", x_freqs=1)
    opt = AdamConfig(lr=1e-2, warmup=5, schedule="cosine", ema_decay=0.99, clip=1.0)
    theta = init_params(spec.sizes, np.random.default_rng(0))
    draw = lambda n, r: datasets.sample("8gaussians", n, r)      # noqa: E731
    stream = train.BatchStream(draw, 2, 16, 0, np.float32, time_power=2.0)
    noise = train.PathNoise(False, 2, 16, 0, np.float32)
    stepper = CpuStepper(spec, opt, (STRAIGHT, 0.0), 16, noise, threads=threads)
    a = TrainState(theta.copy())
    assert stepper.run(a, stream, 30, 70) == 0 and stepper.run(a, stream, 40, 70) == 0
    b = TrainState(theta.copy())
    step = split_train_step if threads > 1 else train_step
    from fmnumpy.threads import single_threaded_blas
    blas = single_threaded_blas()                   # as the split stepper runs
    try:
        for k in range(1, 71):
            x0, x1, t = stream.batch_at(k - 1)
            loss, _ = step(b.buf, stepper.net, stepper.path,
                           (x0, x1, t, noise.noise_at(k - 1), NO_LABELS),
                           hyper_at(opt, k, 70), stepper.work)
            b.losses.append(float(loss))
    finally:
        blas.restore_original_limits()
    assert a.step == 70 and np.array_equal(a.buf, b.buf) and a.losses == b.losses


def test_the_stepper_splits_where_it_was_measured_faster():
    import numba
    from fmnumpy.euclidean.step import CpuStepper
    opt, noise = AdamConfig(), train.PathNoise(False, 2, 8, 0, np.float32)
    threads = {w: CpuStepper(MLPSpec(2, (w, w)), opt, (STRAIGHT, 0.0), 8, noise).threads
               for w in (32, 64, 128, 256, 512)}
    T = min(numba.get_num_threads(), 8)
    assert threads == {32: 1, 64: T, 128: T, 256: T, 512: 1}


# ---- one state, one loop -----------------------------------------------------------------

def test_the_estimator_holds_one_state_buffer():
    fm = fitted()
    buf = fm.state_.buf
    assert buf.shape == (5, fm.spec_.n_params) and buf.dtype == np.float32
    for name, row in (("theta_", THETA), ("m_", M), ("v_", V), ("ema_", EMA)):
        assert np.shares_memory(getattr(fm, name), buf[row])
    assert fm.step_ == fm.state_.step == 4 and fm.losses_ is fm.state_.losses


class ScriptedStepper:
    """A stepper that records what the loop asks and fails where told."""

    def __init__(self, bad_at=0, interrupt_at=0):
        self.calls, self.pulls, self.interrupts = [], 0, 0
        self.bad_at, self.interrupt_at = bad_at, interrupt_at

    def run(self, state, stream, n, total):
        self.calls.append((state.step, n, total))
        for _ in range(n):
            k = state.step + 1
            if k == self.bad_at:
                return k
            if k == self.interrupt_at:
                raise KeyboardInterrupt
            state.record([1.0 / k])
        return 0

    def pull(self, state):
        self.pulls += 1

    def interrupted(self, state):
        self.interrupts += 1


def test_the_loop_stops_where_callbacks_checkpoints_and_the_bar_need_it():
    state, st = TrainState(np.zeros(3)), ScriptedStepper()
    seen, saved, bar = [], [], []

    class Bar:
        def __init__(self, total, initial):
            bar.append(("open", total, initial))

        def update(self, k, loss, rate):
            bar.append(k)

        def close(self):
            bar.append("close")

    loop.run(state, None, st, 120, until=110, progress=Bar, callback=seen.append,
              callback_every=30, checkpoint="c.npz", checkpoint_every=40, save=saved.append)
    assert state.step == 110 and len(state.losses) == 110
    assert seen == [30, 60, 90] and saved == ["c.npz"] * 3        # 40, 80 and the end
    assert [c[0] for c in st.calls] == [0, 30, 40, 50, 60, 80, 90, 100]
    assert all(c[2] == 120 for c in st.calls)                      # the schedule spans 120
    assert bar == [("open", 110, 0), 50, 100, 110, "close"]


def test_the_loop_on_a_bad_step_and_on_ctrl_c():
    state, st, saved = TrainState(np.zeros(3)), ScriptedStepper(bad_at=7), []
    with pytest.raises(FmnumpyError, match="non-finite at step 7.*c.npz is kept"):
        loop.run(state, None, st, 20, checkpoint="c.npz", checkpoint_every=5,
                  save=saved.append)
    assert state.step == 6 and st.pulls >= 1 and saved == ["c.npz"]     # step 5's only
    state, st, saved, said = TrainState(np.zeros(3)), ScriptedStepper(interrupt_at=4), [], []
    with pytest.raises(KeyboardInterrupt):
        loop.run(state, None, st, 20, checkpoint="c.npz", save=saved.append, log=said.append)
    assert state.step == 3 and st.interrupts == 1 and saved == ["c.npz"]
    assert "interrupted at step 3" in said[0]


# ---- layout -------------------------------------------------------------------------------

def test_no_compiled_function_takes_more_than_12_parameters():
    rows = tool("signatures").compiled_functions(PKG)
    assert len(rows) > 50                               # it found the compiled code
    assert rows[0][0] <= 12, rows[:5]


def imports_tool(pkg):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "imports.py"), str(pkg)],
                          capture_output=True, text=True)


def test_the_layers_keep_their_import_rules():
    """docs/architecture.md: the core imports no family and no edge, no family imports
    another, the CUDA code only from its family, no cycles."""
    out = imports_tool(PKG)
    assert out.returncode == 0 and out.stdout.split("\n")[:2] == ["cycles: none", "rules: ok"], \
        out.stdout


@pytest.mark.parametrize("where,line,words", [
    ("nn/extra.py", "from fmnumpy.euclidean import paths", "(core) imports fmnumpy.euclidean"),
    ("manifold/extra.py", "from fmnumpy.discrete import tokens", "no family imports another"),
    ("discrete/extra.py", "import matplotlib", "plots/ only"),
    ("cli/extra.py", "from fmnumpy.euclidean.cuda import require_gpu", "CUDA code"),
    ("train/a.py", "from fmnumpy.train import b", "cycles: ['fmnumpy.train.a"),
])
def test_the_import_tool_fails_when_a_rule_breaks(tmp_path, where, line, words):
    import shutil
    pkg = tmp_path / "fmnumpy"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / where).write_text(line + "\n")
    if where == "train/a.py":
        (pkg / "train" / "b.py").write_text("from fmnumpy.train import a\n")
    out = imports_tool(pkg)
    assert out.returncode == 1 and words in out.stdout, out.stdout


# ---- one registry of solvers ----------------------------------------------------------------

def test_what_the_gpu_cannot_do_is_one_line_not_a_cpu_run():
    fm = fitted().set_params(device="cuda")
    x = np.zeros((3, 2))
    for call, words in ((lambda: fm.sample(5, method="dopri5"), ["dopri5", "euler", "rk4"]),
                        (lambda: fm.sample(5, method="dopri5", return_logprob=True),
                         ["log-probabilities", "cpu"]),
                        (lambda: fm.log_prob(x, method="dopri5"), ["log-probabilities"]),
                        (lambda: fm.log_prob(x, dtype="float64"), ["float64", "cpu"])):
        with pytest.raises(FmnumpyError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and all(w in msg for w in words), msg


def test_unknown_method_names_every_method():
    with pytest.raises(FmnumpyError, match="euler, midpoint, heun, rk4, dopri5"):
        fitted().sample(5, method="rk45")


# ---- one configuration ----------------------------------------------------------------------

def test_get_params_round_trips_through_the_constructor_and_checkpoints(tmp_path):
    fm = fitted(coupling="sinkhorn", coupling_options={"reg": 0.2}, activation="selu",
                time_power=1.5)
    params = fm.get_params()
    assert set(params) == set(FlowMatcher.PARAMS)
    assert FlowMatcher(**params).get_params() == params
    fm.save(tmp_path / "m.npz")
    assert FlowMatcher.load(tmp_path / "m.npz").get_params() == params


def test_fourier_features_of_x_round_trip(tmp_path):
    """x_freqs widens the input (D + 2 K D^2 + 1 columns) and survives save/load with
    the same samples."""
    fm = fitted(x_freqs=2)
    assert fm.spec_.sizes[0] == 2 + 2 * 2 * 4 + 1 and fm.get_params()["x_freqs"] == 2
    fm.save(tmp_path / "m.npz")
    back = FlowMatcher.load(tmp_path / "m.npz")
    assert back.spec_.x_freqs == 2
    np.testing.assert_array_equal(back.sample(7, seed=3), fm.sample(7, seed=3))
    logp = fm.log_prob(fm.sample(7, seed=3))
    assert logp.shape == (7,) and np.all(np.isfinite(logp))
    with pytest.raises(FmnumpyError, match="x_freqs must be >= 0"):
        FlowMatcher(x_freqs=-1)


def test_set_params_validates_and_leaves_the_model_unchanged_on_error():
    fm = fitted()
    before = fm.get_params()
    with pytest.raises(FmnumpyError, match="unknown parameter 'hiden'"):
        fm.set_params(hiden=(4,))
    with pytest.raises(FmnumpyError, match="learning rate"):
        fm.set_params(lr=-1.0)
    cos = FlowMatcher(path="cosine")
    with pytest.raises(FmnumpyError, match="unknown device"):
        cos.set_params(device="tpu")
    assert cos.device == "cpu" and fm.get_params() == before
    assert fm.set_params(lr=0.01, warmup=3) is fm
    assert fm.opt.lr == 0.01 and fm.opt.warmup == 3


# ---- data once; reflow's time power --------------------------------------------------------

def test_train_reads_a_csv_once(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(40, 2)), delimiter=",")
    reads = []
    real = datasets._read_csv
    monkeypatch.setattr(datasets, "_read_csv", lambda p: reads.append(p) or real(p))
    assert run(["train", "--data", path, "--steps", 3, "--out", tmp_path / "o", *TINY]) == 0
    assert len(reads) == 1


def test_reflow_records_the_time_power_its_stream_draws():
    """Reflow used to record the default time_power 2 while its pair stream drew t
    uniformly: the recorded power must be the one the stream uses."""
    base = fitted()
    assert base.time_power == 2.0
    streams = []
    real = reflow_mod.ReflowedMatcher._run

    def spy(self, stepper, stream, steps, *args, **kw):
        streams.append(stream)
        return real(self, stepper, stream, steps, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reflow_mod.ReflowedMatcher, "_run", spy)
        for power in (1.0, 3.0):
            new = reflow_mod.reflow(base, n_pairs=20, steps=2, batch_size=4, seed=1,
                                    pair_steps=2, time_power=power)
            assert new.time_power == power
            s = streams[-1]
            _, _, t = s.batch_at(0)
            rng = np.random.default_rng([1, train.TRAIN_STREAM, 0])
            rng.integers(0, 20, size=(config.DATA_CHUNK_STEPS, 4))
            u = rng.random((config.DATA_CHUNK_STEPS, 4))
            np.testing.assert_array_equal(t, time_from_uniform(u, power).astype(np.float32)[0])
