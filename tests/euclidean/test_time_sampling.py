"""Training times t = 1 - (1 - u)^K of uniform u (paths.time_from_uniform,
docs/flow_matching.md#time-sampling): the distribution, the stream, checkpoints and
bad settings."""
import os

import numpy as np
import pytest

from fmnumpy import FlowMatcher, FmnumpyError
from fmnumpy.train import checkpoint as ckpt_mod
from fmnumpy.config import DATA_CHUNK_STEPS
from fmnumpy.euclidean.datasets import make_sampler
from fmnumpy.train.times import time_from_uniform
from fmnumpy.euclidean.stream import BatchStream, TRAIN_STREAM
from reference import FIXTURES  # noqa: E402

from reference import TINY, assert_one_line_error, run


@pytest.mark.parametrize("K", [0.5, 1.0, 1.5, 3.0])
def test_times_follow_beta_1_over_k(K):
    u = np.random.default_rng(0).random(200_000)
    t = time_from_uniform(u, K)
    assert t.min() >= 0.0 and t.max() <= 1.0
    # Beta(1, 1/K): mean K / (K + 1), CDF 1 - (1 - x)^(1/K)
    assert t.mean() == pytest.approx(K / (K + 1.0), abs=3e-3)
    x = np.linspace(0.01, 0.99, 50)
    ecdf = np.searchsorted(np.sort(t), x) / t.size
    np.testing.assert_allclose(ecdf, 1.0 - (1.0 - x) ** (1.0 / K), atol=5e-3)
    if K == 1.0:
        np.testing.assert_array_equal(t, u)


def test_stream_transforms_the_same_uniform_draws():
    draw = make_sampler("2spirals")
    plain = BatchStream(draw, 2, 32, seed=4, dtype=np.float32)
    skew = BatchStream(draw, 2, 32, seed=4, dtype=np.float32, time_power=2.0)
    for step in (0, DATA_CHUNK_STEPS + 3):
        x0, x1, t = plain.batch_at(step)
        y0, y1, s = skew.batch_at(step)
        np.testing.assert_array_equal(x0, y0)          # only t changes
        np.testing.assert_array_equal(x1, y1)
        # uniform t is the generator's draw itself, as before the option existed
        k, r = divmod(step, DATA_CHUNK_STEPS)
        rng = np.random.default_rng([4, TRAIN_STREAM, k])
        draw(DATA_CHUNK_STEPS * 32, rng)
        rng.standard_normal((DATA_CHUNK_STEPS, 32, 2))
        u = rng.random((DATA_CHUNK_STEPS, 32))[r]
        np.testing.assert_array_equal(t, u.astype(np.float32))
        np.testing.assert_array_equal(s, time_from_uniform(u, 2.0).astype(np.float32))


FIXTURE = os.path.join(FIXTURES, "checkpoints", "euclidean.npz")


def test_time_power_is_kept_by_checkpoints(tmp_path):
    fm = FlowMatcher(hidden=(4,), seed=0, time_power=2.5).fit("2spirals", steps=3,
                                                              batch_size=8)
    fm.save(tmp_path / "new.npz")
    assert FlowMatcher.load(tmp_path / "new.npz").time_power == 2.5
    assert ckpt_mod.load_checkpoint(tmp_path / "new.npz")[0]["params"]["time_power"] == 2.5
    # fmnumpy 0.1.0's schema (tests/fixtures), as written before the option existed
    meta, arrays = ckpt_mod.load_checkpoint(FIXTURE)
    assert FlowMatcher.load(FIXTURE).time_power == meta["time_power"] == 2.0
    del meta["time_power"]
    ckpt_mod.save_checkpoint(tmp_path / "old.npz", meta, arrays)
    assert FlowMatcher.load(tmp_path / "old.npz").time_power == 1.0


def test_skewed_times_change_training_and_resume_exactly(tmp_path):
    kw = dict(hidden=(8, 8), seed=1, warmup=2)
    a = FlowMatcher(time_power=1.0, **kw).fit("2spirals", steps=6, batch_size=16)
    b = FlowMatcher(time_power=2.0, **kw).fit("2spirals", steps=6, batch_size=16)
    assert a.losses_ != b.losses_
    half = FlowMatcher(time_power=2.0, **kw).fit("2spirals", steps=6, batch_size=16, until=3)
    half.save(tmp_path / "half.npz")
    again = FlowMatcher.load(tmp_path / "half.npz").fit("2spirals", steps=6, batch_size=16,
                                                        warm_start=True)
    np.testing.assert_array_equal(again.theta_, b.theta_)


def test_default_time_power_follows_the_path():
    assert FlowMatcher().time_power == 2.0
    assert FlowMatcher(path="cosine").time_power == 1.0
    assert FlowMatcher(path="sb").time_power == 1.0
    assert FlowMatcher(path="sb", time_power=3).time_power == 3.0


@pytest.mark.parametrize("K", [0, -1.0, float("nan"), float("inf"), "abc", [2.0]])
def test_bad_time_power(K):
    with pytest.raises(FmnumpyError) as e:
        FlowMatcher(time_power=K)
    assert "\n" not in str(e.value) and "time_power" in str(e.value)


def test_command_line_time_power(capsys, tmp_path):
    code = run(["train", "--out", tmp_path, "--steps", 5, *TINY, "--time-power", 0])
    assert_one_line_error(capsys, code, "time_power", "positive")
    code = run(["train", "--out", tmp_path, "--steps", 5, *TINY, "--time-power", 2])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert FlowMatcher.load(tmp_path / "checkpoint.npz").time_power == 2.0
    code = run(["train", "--resume", "--out", tmp_path, "--steps", 8, *TINY,
                "--time-power", 3])
    assert_one_line_error(capsys, code, "time_power", "--resume")
