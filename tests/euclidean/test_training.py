"""The training loop through ``FlowMatcher``: bit-exact resume, checkpoint files
(atomic writes, every kind of unusable file), non-finite losses and Ctrl-C.

P is the number of parameters."""
import json
import os

import numba
import numpy as np
import pytest

from fmnumpy import FlowMatcher, FmnumpyError
from fmnumpy.train import checkpoint as ckpt_mod
from fmnumpy.config import CHECKPOINT_VERSION, DATA_CHUNK_STEPS

THREADS = min(2, numba.config.NUMBA_NUM_THREADS)   # the chunking of a step follows it
N = 70                                             # crosses the 64-step data chunk
TOTAL = 2 * N
BATCH = 32
DATA = "2spirals"
assert N > DATA_CHUNK_STEPS


def new_model(**kw):
    args = dict(hidden=(16, 16), seed=3, warmup=10, lr=3e-3, threads=THREADS)
    args.update(kw)
    return FlowMatcher(**args)


def load(path):
    fm = FlowMatcher.load(path)
    fm.threads = THREADS
    return fm


def assert_same_state(a, b):
    assert a.step_ == b.step_
    for name in ("theta_", "ema_", "m_", "v_"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.losses_ == b.losses_


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted run of TOTAL steps."""
    numba.set_num_threads(THREADS)
    return new_model().fit(DATA, steps=TOTAL, batch_size=BATCH)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.npz"
    new_model().fit(DATA, steps=3, batch_size=8).save(path)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- resume ------------------------------------------------------------------------------

def test_resume_from_checkpoint_is_bit_identical(reference, tmp_path):
    path = tmp_path / "half.npz"
    half = new_model().fit(DATA, steps=TOTAL, batch_size=BATCH, until=N)
    assert half.step_ == N and len(half.losses_) == N
    half.save(path)
    resumed = load(path)
    assert_same_state(resumed, half)
    resumed.fit(DATA, steps=TOTAL, batch_size=BATCH, warm_start=True)
    assert_same_state(resumed, reference)
    assert np.isfinite(reference.losses_).all()


def test_resume_in_memory_is_bit_identical(reference):
    fm = new_model().fit(DATA, steps=TOTAL, batch_size=BATCH, until=N // 2)
    fm.fit(DATA, steps=TOTAL, batch_size=BATCH, warm_start=True, until=N + 5)
    fm.fit(DATA, steps=TOTAL, batch_size=BATCH, warm_start=True)
    assert_same_state(fm, reference)


def test_same_seed_same_run_other_seed_other_run(reference):
    again = new_model().fit(DATA, steps=TOTAL, batch_size=BATCH)
    assert_same_state(again, reference)
    other = new_model(seed=4).fit(DATA, steps=TOTAL, batch_size=BATCH, until=5)
    assert not np.array_equal(other.theta_, reference.theta_)


def test_resume_refuses_other_batch_size_fewer_steps_and_other_dimension(tmp_path):
    fm = new_model().fit(DATA, steps=20, batch_size=8, until=10)
    with pytest.raises(FmnumpyError, match="batch size"):
        fm.fit(DATA, steps=20, batch_size=16, warm_start=True)
    with pytest.raises(FmnumpyError, match="already taken 10 steps"):
        fm.fit(DATA, steps=5, batch_size=8, warm_start=True)
    with pytest.raises(FmnumpyError, match="D=2"):
        fm.fit(np.zeros((10, 3), np.float32), steps=20, batch_size=8, warm_start=True)


def test_checkpoint_round_trip_keeps_everything(small_checkpoint, tmp_path):
    fm = load(small_checkpoint)
    again = tmp_path / "again.npz"
    fm.save(again)
    assert_same_state(load(again), fm)
    meta, arrays = ckpt_mod.load_checkpoint(again)
    assert meta["version"] == CHECKPOINT_VERSION and meta["step"] == 3
    assert meta["rng"]["counter"] == 3 and meta["params"]["seed"] == 3
    assert meta["family"] == "euclidean"
    assert arrays["theta"].shape == (fm.spec_.n_params,)
    x = fm.sample(5, steps=3)
    assert x.shape == (5, 2) and np.isfinite(x).all()


# ---- unusable checkpoint files -----------------------------------------------------------

def assert_helpful(excinfo, path, *words):
    msg = str(excinfo.value)
    assert str(path) in msg, msg
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("keep", [0, 1, 10, 0.5, -1])
def test_truncated_checkpoint(small_checkpoint, tmp_path, keep):
    data = read(small_checkpoint)
    n = int(len(data) * keep) if isinstance(keep, float) else (keep % len(data))
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[:n])
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher.load(path)
    assert_helpful(e, path, "checkpoint")


def test_npz_without_meta(tmp_path):
    path = tmp_path / "random.npz"
    np.savez(path, theta=np.arange(5.0), x=np.ones(3))
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher.load(path)
    assert_helpful(e, path, "not an fmnumpy checkpoint")


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"", b"PK\x03\x04garbage",
                                     bytes(range(256)) * 4])
def test_non_zip_file(tmp_path, content):
    path = tmp_path / "notzip.npz"
    path.write_bytes(content)
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher.load(path)
    assert_helpful(e, path, "checkpoint")


def test_npy_file_passed_as_checkpoint(tmp_path):
    """A plain .npy array (np.load returns an ndarray, not an archive)."""
    path = tmp_path / "array.npy"
    np.save(path, np.arange(10.0))
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher.load(path)
    assert_helpful(e, path, "checkpoint")


def test_missing_checkpoint_and_directory(tmp_path):
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher.load(tmp_path / "nope.npz")
    assert_helpful(e, tmp_path / "nope.npz", "does not exist")
    with pytest.raises(FmnumpyError):
        FlowMatcher.load(tmp_path)


def rewrite(src, dst, meta_fn=None, drop=(), replace=None):
    """Copy checkpoint src to dst with the meta dict edited and arrays dropped/replaced."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta_fn:
        meta = meta_fn(meta)
    for k in drop:
        arrays.pop(k)
    arrays.update(replace or {})
    np.savez(dst, meta=np.array(json.dumps(meta)), **arrays)


def test_checkpoint_of_another_version(small_checkpoint, tmp_path):
    path = tmp_path / "v99.npz"
    rewrite(small_checkpoint, path, lambda m: dict(m, version=99))
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher.load(path)
    assert_helpful(e, path, "version 99", f"version {CHECKPOINT_VERSION}")


@pytest.mark.parametrize("case", ["magic", "meta_not_dict", "meta_not_json", "no_params",
                                  "no_step", "missing_array", "wrong_shape", "bad_hidden"])
def test_damaged_checkpoints(small_checkpoint, tmp_path, case):
    path = tmp_path / f"{case}.npz"
    if case == "magic":
        rewrite(small_checkpoint, path, lambda m: dict(m, magic="something-else"))
    elif case == "meta_not_dict":
        rewrite(small_checkpoint, path, lambda m: [1, 2, 3])
    elif case == "meta_not_json":
        with np.load(small_checkpoint) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["meta"] = np.array("{not json")
        np.savez(path, **arrays)
    elif case == "no_params":
        rewrite(small_checkpoint, path, lambda m: {k: v for k, v in m.items() if k != "params"})
    elif case == "no_step":
        rewrite(small_checkpoint, path, lambda m: {k: v for k, v in m.items() if k != "step"})
    elif case == "missing_array":
        rewrite(small_checkpoint, path, drop=("ema",))
    elif case == "wrong_shape":
        rewrite(small_checkpoint, path, replace={"theta": np.zeros(7, np.float32)})
    elif case == "bad_hidden":
        rewrite(small_checkpoint, path, lambda m: dict(m, params=dict(m["params"], hidden=[0])))
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher.load(path)
    assert str(path) in str(e.value) or case == "bad_hidden", str(e.value)


# ---- atomic writes ------------------------------------------------------------------------

def test_checkpoints_leave_no_temporary_files(tmp_path):
    path = tmp_path / "run" / "checkpoint.npz"          # folder is created
    new_model().fit(DATA, steps=12, batch_size=8, checkpoint=path, checkpoint_every=3)
    assert os.listdir(tmp_path / "run") == ["checkpoint.npz"]
    assert load(path).step_ == 12


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_the_old_file_and_removes_the_temporary(small_checkpoint, tmp_path,
                                                                  monkeypatch, exc):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(read(small_checkpoint))
    before = read(path)
    fm = load(small_checkpoint)
    fm.theta_ = fm.theta_ + 1

    real_savez = np.savez

    def broken_savez(f, **arrays):
        real_savez(f, **{k: v for k, v in list(arrays.items())[:2]})   # partial write
        raise exc

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(type(exc)):
        fm.save(path)
    monkeypatch.undo()
    assert read(path) == before
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


# ---- non-finite loss ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["huge_lr", "huge_data"])
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(small_checkpoint, tmp_path, how):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(read(small_checkpoint))
    before = read(path)
    if how == "huge_lr":
        fm, data = new_model(lr=1e30, warmup=0, schedule="constant", clip=0.0), DATA
    else:
        fm, data = new_model(), np.full((16, 2), 1e20, np.float32)
    with pytest.raises(FmnumpyError) as e:
        fm.fit(data, steps=50, batch_size=8, checkpoint=path, checkpoint_every=1000)
    msg = str(e.value)
    assert "non-finite" in msg and str(path) in msg and "--lr" in msg
    assert read(path) == before                         # bytes unchanged
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    # the model holds the last good weights, one loss per good step
    assert fm.step_ == len(fm.losses_) and fm.step_ < 50
    assert np.isfinite(fm.losses_).all()
    assert np.isfinite(fm.theta_).all() and np.isfinite(fm.ema_).all()


def test_non_finite_loss_without_checkpoint_writes_nothing(tmp_path):
    fm = new_model()
    with pytest.raises(FmnumpyError, match="non-finite"):
        fm.fit(np.full((16, 2), 1e20, np.float32), steps=5, batch_size=8)
    assert fm.step_ == 0 and fm.losses_ == []


# ---- Ctrl-C --------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 37, DATA_CHUNK_STEPS, 100])
def test_ctrl_c_writes_a_checkpoint_and_resuming_matches(reference, tmp_path, k):
    path = tmp_path / "checkpoint.npz"
    said = []

    def interrupt(model, step):
        if step == k:
            raise KeyboardInterrupt

    fm = new_model()
    with pytest.raises(KeyboardInterrupt):
        fm.fit(DATA, steps=TOTAL, batch_size=BATCH, callback=interrupt, callback_every=1,
               checkpoint=path, checkpoint_every=1000, log=said.append)
    assert fm.step_ == k
    assert said and f"step {k}" in said[-1] and str(path) in said[-1]
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    resumed = load(path)
    assert resumed.step_ == k
    assert_same_state(resumed, fm)
    resumed.fit(DATA, steps=TOTAL, batch_size=BATCH, warm_start=True)
    assert_same_state(resumed, reference)


def test_ctrl_c_without_checkpoint_just_stops():
    def interrupt(model, step):
        raise KeyboardInterrupt

    fm = new_model()
    with pytest.raises(KeyboardInterrupt):
        fm.fit(DATA, steps=10, batch_size=8, callback=interrupt, callback_every=4)
    assert fm.step_ == 4


def test_callback_and_periodic_checkpoints(tmp_path):
    path = tmp_path / "checkpoint.npz"
    seen = []

    def callback(model, step):
        seen.append(step)
        if step == 8:                             # the step-4 (or step-8) checkpoint
            assert load(path).step_ in (4, 8)
    new_model().fit(DATA, steps=20, batch_size=8, callback=callback, callback_every=4,
                    checkpoint=path, checkpoint_every=4)
    assert seen == [4, 8, 12, 16, 20]
    assert load(path).step_ == 20


# ---- the default features in every dimension -------------------------------------------------

def test_default_features_grow_at_most_linearly_with_the_dimension(tmp_path):
    """x_freqs=None: plane waves along the axes and diagonals up to FOURIER_UP_TO
    dimensions, none above; an explicit x_freqs above it runs along the axes alone
    (bench/results/x_freqs_dims.md).  The choice is kept by checkpoints."""
    from fmnumpy.config import FOURIER_UP_TO
    from fmnumpy.nn import mlp
    assert FOURIER_UP_TO < 8
    inputs = {}
    for name, D in (("2spirals", 2), ("gmm8d", 8), ("gmm32d", 32)):
        fm = FlowMatcher(hidden=(4,), threads=1).fit(name, steps=1, batch_size=4)
        inputs[D] = int(fm.spec_.sizes[0])
        assert inputs[D] == mlp.feature_count(D, 0, 0, fm.spec_.x_freqs, fm.spec_.x_dirs)
    assert inputs == {2: 2 + 2 * 3 * 4 + 1, 8: 8 + 1, 32: 32 + 1}
    fm = FlowMatcher(hidden=(4,), x_freqs=3, threads=1).fit("gmm32d", steps=1, batch_size=4)
    assert fm.spec_.x_dirs == "axes" and fm.spec_.sizes[0] == 32 + 2 * 3 * 32 + 1
    fm = FlowMatcher(hidden=(4,), x_freqs=2, x_dirs="axes").fit("2spirals", steps=1,
                                                                batch_size=4)
    assert fm.spec_.sizes[0] == 2 + 2 * 2 * 2 + 1
    back = FlowMatcher.load(fm.save(tmp_path / "a.npz"))
    assert back.spec_.x_dirs == "axes" and back.spec_.sizes[0] == fm.spec_.sizes[0]
    np.testing.assert_array_equal(back.sample(5), fm.sample(5))
    with pytest.raises(FmnumpyError, match="unknown x_dirs 'planes'"):
        FlowMatcher(x_dirs="planes")
