"""Reflow (``fmnumpy/reflow.py``, ``docs/reflow.md``): the pair stream draws only
existing pairs and is a function of (seed, step); a reflowed model keeps its
parent's settings, saves and loads; reflow straightens a toy flow; the
``reflow`` command writes its files and refuses bad input in one line.

N pairs, B batch, D data dimension."""
import json

import numpy as np
import pytest

from fmnumpy import FlowMatcher, FmnumpyError
from fmnumpy.cli import main as cli
from fmnumpy.cli.euclidean import cmd_reflow
from fmnumpy.config import DATA_CHUNK_STEPS
from fmnumpy.euclidean.datasets import make_sampler
from fmnumpy.euclidean.reflow import (PairStream, ReflowedMatcher, compare, make_pairs,
    reflow, source_data)

THREADS = 1          # serial: the test machine is shared, threaded steps stall under load
DATA = "8gaussians"
TRAIN_STEPS = 600    # straightness drops 30-500x at this size (seeds 0-9, both inits)
BATCH = 128


@pytest.fixture(scope="module", autouse=True)
def _threads(restore_numba_threads):
    """Numba's thread count is put back after this module (conftest.py)."""


def tiny(seed=0, **kw):
    args = dict(hidden=(32, 32), seed=seed, warmup=20, lr=3e-3, threads=THREADS,
                x_freqs=0)                    # the thresholds below were set without them
    args.update(kw)
    return FlowMatcher(**args)


@pytest.fixture(scope="module")
def base():
    return tiny().fit(DATA, steps=TRAIN_STEPS, batch_size=BATCH)


@pytest.fixture(scope="module")
def reflowed(base):
    return reflow(base, n_pairs=2000, steps=TRAIN_STEPS, batch_size=BATCH, seed=1,
                  threads=THREADS)


# ---- PairStream --------------------------------------------------------------------------

def random_pairs(n=50, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d))


def test_pair_stream_draws_only_existing_pairs():
    X0, X1 = random_pairs()
    s = PairStream(X0, X1, batch=16, seed=4)
    row_of = {tuple(x): i for i, x in enumerate(s.X0)}
    seen = set()
    for step in range(2 * DATA_CHUNK_STEPS + 3):                 # crosses two chunks
        x0, x1, t = s.batch_at(step)
        assert x0.shape == x1.shape == (16, 3) and t.shape == (16,)
        assert x0.dtype == x1.dtype == t.dtype == np.float32
        assert np.all((t >= 0) & (t < 1))
        for a, b in zip(x0, x1):
            i = row_of[tuple(a)]                                 # x0 is a row of X0 ...
            np.testing.assert_array_equal(b, s.X1[i])            # ... paired with its own x1
            seen.add(i)
    assert len(seen) == len(X0)                                  # every pair gets used


def test_pair_stream_uses_the_counter_based_generator():
    X0, X1 = random_pairs()
    s = PairStream(X0, X1, batch=8, seed=7)
    x0, _, t = s.batch_at(DATA_CHUNK_STEPS + 2)                  # chunk 1, row 2
    rng = np.random.default_rng([7, 1, 1])
    rows = rng.integers(0, len(X0), size=(DATA_CHUNK_STEPS, 8))
    np.testing.assert_array_equal(x0, X0[rows[2]].astype(np.float32))
    np.testing.assert_array_equal(t, rng.random((DATA_CHUNK_STEPS, 8))[2].astype(np.float32))


def test_pair_stream_is_deterministic_and_resumable():
    X0, X1 = random_pairs()
    steps = range(3 * DATA_CHUNK_STEPS)
    ref = PairStream(X0, X1, batch=8, seed=2)
    ref = [tuple(a.copy() for a in ref.batch_at(k)) for k in steps]
    again = PairStream(X0, X1, batch=8, seed=2)
    for k in reversed(steps):                                    # any order, fresh streams
        for a, b in zip(again.batch_at(k), ref[k]):
            np.testing.assert_array_equal(a, b)
    late = PairStream(X0, X1, batch=8, seed=2).batch_at(150)     # a "resumed" stream
    for a, b in zip(late, ref[150]):
        np.testing.assert_array_equal(a, b)
    other = PairStream(X0, X1, batch=8, seed=3).batch_at(0)
    assert not np.array_equal(other[0], ref[0][0])


@pytest.mark.parametrize("X0, X1", [(np.zeros((5, 2)), np.zeros((5, 3))),
                                    (np.zeros((0, 2)), np.zeros((0, 2))),
                                    (np.zeros(5), np.zeros(5))])
def test_pair_stream_refuses_mismatched_pairs(X0, X1):
    with pytest.raises(FmnumpyError, match="pairs"):
        PairStream(X0, X1, batch=4, seed=0)


# ---- make_pairs and reflow ---------------------------------------------------------------

def test_make_pairs_is_the_flow_from_seeded_noise(base):
    X0, X1 = make_pairs(base, 40, method="rk4", steps=20, seed=3)
    np.testing.assert_array_equal(
        X0, np.random.default_rng(3).standard_normal((40, 2)).astype(np.float32))
    np.testing.assert_array_equal(X1, base.sample(x0=X0, method="rk4", steps=20))
    with pytest.raises(FmnumpyError, match="positive integer"):
        make_pairs(base, 0)


def test_reflow_straightens_the_flow(base, reflowed):
    r = compare(base, reflowed, make_sampler(DATA), n=500, seed=0)
    b, a = r["before"], r["after"]
    assert r["reference"] == "data"
    assert a["straightness"] < 0.2 * b["straightness"]          # measured ratio ~0.01
    assert a["w2"]["euler_1"] < 0.8 * b["w2"]["euler_1"]         # one step got much better
    assert a["w2"]["rk4_100"] < b["w2"]["rk4_100"] + 0.1         # and the marginal is kept


def test_compare_without_data_scores_against_the_models_own_rk4(base, reflowed):
    r = compare(base, reflowed, None, n=200, seed=0)
    assert r["reference"] == "rk4_100" and r["n"] == 200
    for side in ("before", "after"):
        assert set(r[side]["w2"]) == {"euler_1", "euler_2", "euler_4"}
    assert r["after"]["w2"]["euler_1"] < r["before"]["w2"]["euler_1"]


def test_reflowed_model_keeps_the_settings_and_round_trips(base, reflowed, tmp_path):
    assert isinstance(reflowed, FlowMatcher)
    assert (reflowed.hidden, reflowed.activation, reflowed.time_freqs) == \
        (base.hidden, base.activation, base.time_freqs)
    assert reflowed.opt.to_dict() == base.opt.to_dict()
    assert reflowed.sigma_min == base.sigma_min and reflowed.coupling == "independent"
    assert reflowed.step_ == TRAIN_STEPS and reflowed.batch_size_ == BATCH
    assert reflowed.data_ == "reflow" and len(reflowed.losses_) == TRAIN_STEPS
    assert reflowed.reflow_ == dict(data=DATA, generation=2, pairs=2000, pair_method="rk4",
                                    pair_steps=100, init="model")
    path = reflowed.save(tmp_path / "r.npz")
    plain = FlowMatcher.load(path)                      # loads as a plain FlowMatcher ...
    np.testing.assert_array_equal(plain.ema_, reflowed.ema_)
    np.testing.assert_array_equal(plain.sample(50, steps=4), reflowed.sample(50, steps=4))
    again = ReflowedMatcher.load(path)                  # ... and keeps its history
    assert again.reflow_ == reflowed.reflow_ and source_data(again) == DATA


def test_reflow_initialisation_and_determinism(base):
    X = make_pairs(base, 300, steps=10, seed=0)
    start = reflow(base, pairs=X, steps=50, batch_size=32, until=0)
    np.testing.assert_array_equal(start.theta_, base.ema_)            # init="model"
    assert start.reflow_["pairs"] == 300 and start.reflow_["pair_method"] is None
    fresh = reflow(base, pairs=X, steps=50, batch_size=32, seed=5, init="random", until=0)
    ref = tiny(seed=5)
    ref._init_state(2)
    np.testing.assert_array_equal(fresh.theta_, ref.theta_)
    one, two = (reflow(base, pairs=X, steps=80, batch_size=32, seed=5, threads=THREADS)
                for _ in range(2))
    np.testing.assert_array_equal(one.theta_, two.theta_)
    assert one.losses_ == two.losses_


def test_reflow_of_a_reflow_remembers_the_data(reflowed):
    again = reflow(reflowed, n_pairs=100, steps=5, batch_size=16, threads=THREADS)
    assert again.reflow_["generation"] == 3 and source_data(again) == DATA
    assert again.batch_size_ == 16 and again.total_steps_ == 5


@pytest.mark.parametrize("kw, words", [(dict(init="nope"), "unknown init"),
                                       (dict(n_pairs=0), "pairs"),
                                       (dict(steps=0), "steps"),
                                       (dict(batch_size=-1), "batch size")])
def test_reflow_bad_arguments(base, kw, words):
    with pytest.raises(FmnumpyError, match=words):
        reflow(base, **dict(dict(n_pairs=10, steps=2, batch_size=4), **kw))


# ---- the command -------------------------------------------------------------------------

def parse(*argv):
    return cli.build_parser().parse_args(["reflow", *(str(a) for a in argv)])


@pytest.fixture(scope="module")
def checkpoint(base, tmp_path_factory):
    return base.save(tmp_path_factory.mktemp("base") / "checkpoint.npz")


FAST = ("--pairs", 500, "--steps", 100, "--batch-size", 64, "--eval-n", 100,
        "--threads", THREADS, "--no-progress")


def test_cmd_reflow_writes_checkpoint_and_report(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert cmd_reflow(parse("--checkpoint", checkpoint, "--out", out, *FAST)) == 0
    printed = capsys.readouterr().out
    for words in ("straightness", "W2 euler 1 step", "W2 euler 4 steps", "before", "after"):
        assert words in printed
    r = json.loads((out / "reflow.json").read_text())
    assert r["reference"] == "data" and r["data"] == DATA and r["steps"] == 100
    assert set(r["after"]["w2"]) == {"euler_1", "euler_2", "euler_4", "rk4_100"}
    fm = ReflowedMatcher.load(out / "checkpoint.npz")
    assert fm.step_ == 100 and fm.data_ == "reflow" and fm.reflow_["pairs"] == 500


def test_cmd_reflow_defaults_to_the_checkpoints_steps_and_batch(checkpoint):
    a = parse("--checkpoint", checkpoint, "--out", "x")
    assert (a.pairs, a.steps, a.batch_size, a.seed, a.init) == (20000, None, None, 0, "model")


def test_cmd_reflow_on_array_data_compares_with_rk4(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(200, 2))
    path = tiny(hidden=(8,)).fit(x, steps=20, batch_size=16).save(tmp_path / "a.npz")
    assert cmd_reflow(parse("--checkpoint", path, "--out", tmp_path / "o", *FAST)) == 0
    assert "rk4 100-step samples" in capsys.readouterr().out
    r = json.loads((tmp_path / "o" / "reflow.json").read_text())
    assert r["reference"] == "rk4_100" and r["data"] is None and "rk4_100" not in r["after"]["w2"]


@pytest.mark.parametrize("flags, words", [(("--pairs", 0), "--pairs"),
                                          (("--steps", -3), "--steps"),
                                          (("--batch-size", 0), "--batch-size"),
                                          (("--eval-n", 1), "--eval-n")])
def test_cmd_reflow_bad_numbers(checkpoint, tmp_path, flags, words):
    with pytest.raises(FmnumpyError, match=words):
        cmd_reflow(parse("--checkpoint", checkpoint, "--out", tmp_path, *flags))


def test_cmd_reflow_bad_paths(checkpoint, tmp_path):
    with pytest.raises(FmnumpyError, match="does not exist"):
        cmd_reflow(parse("--checkpoint", tmp_path / "none.npz", "--out", tmp_path))
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(FmnumpyError, match="is a file"):
        cmd_reflow(parse("--checkpoint", checkpoint, "--out", taken))


def test_cli_reflow_errors_are_one_line(checkpoint, tmp_path, capsys):
    code = cli.main(["reflow", "--checkpoint", str(checkpoint), "--out", str(tmp_path),
                     "--pairs", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--pairs" in err
