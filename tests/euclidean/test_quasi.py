"""Quasi-random source draws (fmnumpy.quasi, ``sample(qmc=True)``): scrambled Sobol
points through the normal inverse CDF are N(0, I) marginals stratified one point per
1/n of probability in every coordinate; the API and CLI take them seeded, refuse them
where they do not apply, and the flow carries their evenness to the samples.

Dimension letters: N points, D dimensions."""
import numpy as np
import pytest
from scipy.special import ndtr

from fmnumpy import FlowMatcher, FmnumpyError, metrics
from fmnumpy.euclidean import datasets
from fmnumpy.euclidean.quasi import sobol_normal

from reference import run


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_each_coordinate_puts_one_point_in_every_probability_bin(dim):
    n = 1024                                           # a power of 2: a full net
    z = sobol_normal(n, dim, np.random.default_rng(0))
    assert z.shape == (n, dim) and z.dtype == np.float64 and np.isfinite(z).all()
    for j in range(dim):
        bins = np.floor(ndtr(z[:, j]) * n).astype(int)
        np.testing.assert_array_equal(np.sort(bins), np.arange(n))
    # independent draws leave about n / e of the bins empty
    iid = np.floor(ndtr(np.random.default_rng(0).standard_normal(n)) * n).astype(int)
    assert np.unique(iid).size < 0.7 * n


def test_moments_and_seeding():
    z = sobol_normal(4096, 3, np.random.default_rng(1))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=2e-3)
    np.testing.assert_allclose(np.cov(z.T), np.eye(3), atol=0.02)
    np.testing.assert_array_equal(sobol_normal(100, 3, np.random.default_rng(1)), z[:100])
    assert not np.allclose(sobol_normal(100, 3, np.random.default_rng(2)), z[:100])


def one_line_error(fn, words):
    with pytest.raises(FmnumpyError, match=words) as e:
        fn()
    assert "\n" not in str(e.value)


def test_too_many_dimensions():
    one_line_error(lambda: sobol_normal(4, 30000, np.random.default_rng(0)), "21201 dimensions")


@pytest.fixture(scope="module")
def gaussians_model():
    return FlowMatcher(hidden=(32, 32), seed=0, warmup=20, lr=3e-3, threads=1).fit(
        "8gaussians", steps=400, batch_size=128, progress=False)


def test_sample_qmc_is_seeded_and_more_even_across_modes(gaussians_model):
    fm = gaussians_model
    a = fm.sample(512, steps=10, seed=3, qmc=True)
    np.testing.assert_array_equal(a, fm.sample(512, steps=10, seed=3, qmc=True))
    assert not np.allclose(a, fm.sample(512, steps=10, seed=3))
    # the points of one mode: the spread of the mode counts over seeds is smaller
    centres = datasets.EIGHT_CENTRES / 1.414

    def spread(qmc):
        counts = [np.bincount(np.argmin(metrics.sq_dists(
            fm.sample(512, steps=10, seed=s, qmc=qmc).astype(np.float64), centres), 1),
            minlength=8) for s in range(8)]
        return np.std(counts)
    assert spread(True) < 0.6 * spread(False)


def test_sample_qmc_refused_with_x0_and_for_another_source(gaussians_model):
    x0 = np.zeros((3, 2), np.float32)
    one_line_error(lambda: gaussians_model.sample(x0=x0, qmc=True), "either x0 or qmc")
    moved = FlowMatcher(hidden=(8,), seed=0, threads=1).fit(
        "moons", steps=2, batch_size=8, source="8gaussians", progress=False)
    one_line_error(lambda: moved.sample(4, qmc=True), "'8gaussians'")


def test_cli_sample_qmc(gaussians_model, tmp_path, capsys):
    gaussians_model.save(tmp_path / "m.npz")
    out = tmp_path / "x.npy"
    code = run(["sample", "--checkpoint", tmp_path / "m.npz", "--out", out, "-n", 64,
                "--steps", 5, "--seed", 2, "--qmc"])
    assert code == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out),
                                  gaussians_model.sample(64, steps=5, seed=2, qmc=True))


def test_evaluate_with_qmc_uses_the_quasi_random_samples(gaussians_model, tmp_path, capsys):
    fm = gaussians_model
    plain, quasi = fm.evaluate(n=256, steps=10), fm.evaluate(n=256, steps=10, qmc=True)
    fresh = datasets.make_sampler("8gaussians")(256, np.random.default_rng([0, 9]))
    x0 = sobol_normal(256, 2, np.random.default_rng([0, 10])).astype(np.float32)
    assert quasi["w2"] == pytest.approx(metrics.w2(fm.sample(x0=x0, steps=10), fresh), rel=1e-9)
    assert quasi["w2"] != plain["w2"]
    assert quasi["w2_source_data"] == plain["w2_source_data"]      # the others stay iid
    fm.save(tmp_path / "m.npz")
    code = run(["evaluate", "--checkpoint", tmp_path / "m.npz", "-n", 256, "--steps", 10,
                "--seed", 0, "--qmc", "--json", tmp_path / "m.json"])
    assert code == 0, capsys.readouterr().err
    import json
    got = json.loads((tmp_path / "m.json").read_text())
    assert got["qmc"] is True and got["w2"] == pytest.approx(quasi["w2"], rel=1e-9)
