"""The stochastic sampler (fmnumpy/euclidean/sde.py, docs/sde.md): the score read off
the velocity against the exact score of Gaussian data, the SDE's marginals against the
exact ones, noise 0 against Euler, and the one-line refusals."""
import math

import numpy as np
import pytest

from fmnumpy import FlowMatcher
from fmnumpy.errors import FmnumpyError
from fmnumpy.euclidean import sde
from fmnumpy.euclidean.paths import COSINE, STRAIGHT

M, C = np.array([1.5, -0.5]), 0.3          # the data N(M, C^2 I)


def gaussian_field(path, param):
    """The exact velocity and score of data N(M, C^2 I) on a path xt = s x0 + a x1:
    xt ~ N(a M, V I), V = s^2 + a^2 C^2, E[x1 | x] = M + a C^2 / V (x - a M),
    E[x0 | x] = s / V (x - a M), v = a' E[x1 | x] + s' E[x0 | x]."""
    def parts(x, t):
        a, s, da, ds = sde.SCHEDULES[path](t, param)
        V = s * s + a * a * C * C
        r = x - a * M
        return da * (M + a * C * C / V * r) + ds * s / V * r, -r / V
    return parts


@pytest.mark.parametrize("path,param", [(STRAIGHT, 0.0), (STRAIGHT, 0.1), (COSINE, 0.0)])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.77, 0.99])
def test_the_score_from_the_velocity_is_the_exact_score(path, param, t):
    x = np.random.default_rng(1).normal(size=(50, 2)) * 2
    v, score = gaussian_field(path, param)(x, t)
    assert np.allclose(sde.score_from_velocity(v, x, t, path, param), score, atol=1e-12)


@pytest.mark.parametrize("path", [STRAIGHT, COSINE])
def test_the_sde_keeps_the_marginals_and_moves_each_particle(path):
    """From N(0, I) to N(M, C^2 I) with the exact field: the SDE's samples have the
    data's mean and sd within the Monte-Carlo and Euler errors, though each particle
    ends far from where the ODE takes it."""
    exact = gaussian_field(path, 0.0)
    field = lambda x, t: exact(x, t)[0]                              # noqa: E731
    x0 = np.random.default_rng(2).standard_normal((20000, 2))
    ode = sde.euler_maruyama(field, x0, 400, 0.0, np.random.default_rng(3), path, 0.0)
    x = sde.euler_maruyama(field, x0, 400, 1.5, np.random.default_rng(3), path, 0.0)
    for y in (ode, x):
        assert np.abs(y.mean(axis=0) - M).max() < 0.01
        assert np.abs(y.std(axis=0) - C).max() < 0.01
    assert np.sqrt(((x - ode) ** 2).sum(axis=1)).mean() > 0.1       # other particles


@pytest.fixture(scope="module")
def spirals():
    return FlowMatcher(hidden=(32, 32), seed=0, threads=1).fit("2spirals", steps=200)


def test_noise_zero_is_euler_and_noise_is_seeded(spirals):
    euler = spirals.sample(300, method="euler", steps=20, seed=4)
    assert np.abs(spirals.sample(300, method="sde", steps=20, seed=4, noise=0) - euler).max() < 1e-5
    a = spirals.sample(300, method="sde", steps=20, seed=4)
    assert np.array_equal(a, spirals.sample(300, method="sde", steps=20, seed=4))
    assert not np.array_equal(a, spirals.sample(300, method="sde", steps=20, seed=5))
    assert a.shape == (300, 2) and a.dtype == np.float32 and np.abs(a - euler).mean() > 0.01


@pytest.mark.parametrize("kw,words", [
    (dict(noise=-1.0), "noise must be a finite number >= 0"),
    (dict(noise=math.nan), "noise must be a finite number >= 0"),
    (dict(steps=0), "steps"),
    (dict(record=5), "drop record"),
    (dict(return_logprob=True), "drop record and return_logprob"),
])
def test_bad_sde_calls_are_one_line(spirals, kw, words):
    with pytest.raises(FmnumpyError, match=words):
        spirals.sample(10, method="sde", **kw)


def test_noise_without_sde_and_paths_without_a_score_are_refused(spirals):
    with pytest.raises(FmnumpyError, match="noise is the SDE sampler's; pass method='sde'"):
        spirals.sample(10, method="rk4", noise=1.0)
    for kw, words in ((dict(path="sb"), "sb path does not give"),
                      (dict(sigma=0.1), "constant-width sigma path does not give")):
        fm = FlowMatcher(hidden=(8,), seed=0, threads=1, **kw).fit("2spirals", steps=2)
        with pytest.raises(FmnumpyError, match=words):
            fm.sample(10, method="sde")
    fm = FlowMatcher(hidden=(8,), seed=0, threads=1).fit(
        "moons", steps=2, source="8gaussians")
    with pytest.raises(FmnumpyError, match="needs the N\\(0, I\\) source"):
        fm.sample(10, method="sde")


def test_cli_samples_with_the_sde_and_refuses_noise_elsewhere(spirals, tmp_path, capsys):
    from fmnumpy.cli.main import main
    from reference import assert_one_line_error
    ckpt = tmp_path / "c.npz"
    spirals.save(ckpt)
    out = tmp_path / "x.npy"
    code = main(["sample", "--checkpoint", str(ckpt), "--method", "sde", "--noise", "0.5",
                 "--steps", "20", "-n", "300", "--seed", "4", "--out", str(out)])
    capsys.readouterr()
    assert code == 0
    assert np.array_equal(np.load(out), spirals.sample(300, method="sde", steps=20, seed=4,
                                                        noise=0.5))
    for argv, words in ((["--noise", "1"], ("noise is the SDE sampler's",)),
                        (["--method", "sde", "--log-prob", str(tmp_path / "l.npy")],
                         ("return_logprob",))):
        code = main(["sample", "--checkpoint", str(ckpt), "--out", str(out), *argv])
        assert_one_line_error(capsys, code, *words)
