"""End to end: a short seeded training run learns the distribution (exact W2 to fresh
data well below that of the prior), and user data of another dimension trains and
samples.  N samples, D data dimension."""
import numpy as np
import pytest

from fmnumpy import FlowMatcher, FmnumpyError
from fmnumpy.euclidean.datasets import sample as draw
from fmnumpy.metrics import w2

N = 1000


@pytest.fixture(scope="module")
def spirals_model():
    # threads=1: a serial step is fastest for this size on a small, busy machine
    fm = FlowMatcher(hidden=(64, 64, 64), seed=0, lr=3e-3, warmup=100, threads=1)
    return fm.fit("2spirals", steps=1500, batch_size=256)


def test_training_on_2spirals_beats_the_prior_by_far(spirals_model):
    fm = spirals_model
    assert fm.step_ == 1500 and len(fm.losses_) == 1500
    assert np.isfinite(fm.losses_).all()
    assert np.mean(fm.losses_[-100:]) < np.mean(fm.losses_[:100])
    data = draw("2spirals", N, np.random.default_rng(101)).astype(np.float64)   # fresh
    x = fm.sample(N, method="rk4", steps=50, seed=102)
    assert x.shape == (N, 2) and np.isfinite(x).all()
    prior = np.random.default_rng(103).standard_normal((N, 2))
    w_model, w_prior = w2(x, data), w2(prior, data)
    w_data = w2(draw("2spirals", N, np.random.default_rng(104)), data)   # sampling noise
    print(f"W2 model {w_model:.3f}, prior {w_prior:.3f}, data vs data {w_data:.3f}")
    assert w_model < 0.5 * w_prior


def test_sampling_is_seeded_and_methods_agree(spirals_model):
    fm = spirals_model
    a = fm.sample(200, method="rk4", steps=40, seed=7)
    np.testing.assert_array_equal(a, fm.sample(200, method="rk4", steps=40, seed=7))
    assert not np.array_equal(a, fm.sample(200, method="rk4", steps=40, seed=8))
    # a learned field is smooth: rk4 with 40 steps and heun with 100 steps agree
    b = fm.sample(200, method="heun", steps=100, seed=7)
    assert np.abs(a - b).max() < 0.05
    x0 = np.random.default_rng(7).standard_normal((200, 2))
    np.testing.assert_array_equal(fm.sample(x0=x0, method="rk4", steps=40), a)


def test_user_array_of_dimension_three_trains_and_samples(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[2.0, 0, 0], [-2.0, 0, 0], [0, 0, 2.0]])
    data = (centres[rng.integers(0, 3, 600)] + 0.3 * rng.standard_normal((600, 3)))
    fm = FlowMatcher(hidden=(32, 32), seed=1, warmup=20, threads=1)
    fm.fit(data.astype(np.float32), steps=300, batch_size=64)
    x = fm.sample(50, method="midpoint", steps=20)
    assert x.shape == (50, 3) and np.isfinite(x).all()
    v = fm.velocity(x, 0.5)
    assert v.shape == (50, 3)
    # the same data from a .npy and a .csv file
    np.save(tmp_path / "d.npy", data)
    np.savetxt(tmp_path / "d.csv", data, delimiter=",", header="a,b,c", comments="")
    for path in (tmp_path / "d.npy", tmp_path / "d.csv"):
        fm2 = FlowMatcher(hidden=(8,), seed=1, threads=1).fit(path, steps=5, batch_size=16)
        assert fm2.sample(4, steps=2).shape == (4, 3)
    with pytest.raises(FmnumpyError, match="D=3"):
        fm.fit("2spirals", steps=400, batch_size=64, warm_start=True)


def test_untrained_model_refuses_to_sample():
    with pytest.raises(FmnumpyError, match="not trained"):
        FlowMatcher(hidden=(4,)).sample(3)
