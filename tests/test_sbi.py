"""Simulation-based inference (fmnumpy/sbi/, docs/sbi.md): the tasks' simulators against
their definitions, the posterior flow's samples, densities and checkpoints, the command
line and its one-line refusals, the classifier two-sample test, and continuous conditions
on the command line."""
import json
import math

import numpy as np
import pytest

from fmnumpy.errors import FmnumpyError
from fmnumpy.metrics import c2st
from fmnumpy.sbi import PosteriorFlow, TASKS, get_task, simulate
from fmnumpy.sbi.tasks import (gaussian_linear_posterior, glm_design, glm_log_posterior,
                               glm_prior_precision, in_prior)

from reference import assert_one_line_error, run


# ---- the tasks -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_simulates_its_shapes_inside_its_prior_and_by_its_seed(name):
    task = get_task(name)
    theta, x = simulate(name, 500, seed=3)
    assert theta.shape == (500, task.dim_theta) and x.shape == (500, task.dim_x)
    assert in_prior(task, theta).all() and np.isfinite(x).all()
    again = simulate(name, 500, seed=3)
    assert np.array_equal(again[0], theta) and np.array_equal(again[1], x)
    assert not np.array_equal(simulate(name, 500, seed=4)[1], x)
    assert (task.bounds is None) == (task.precision is not None)     # a box or a Gaussian
    if task.precision is not None:                      # its draws have that covariance
        theta = task.prior(40_000, np.random.default_rng(0))
        cov = np.linalg.inv(task.precision)
        scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        assert np.abs(theta.mean(axis=0)).max() < 0.03 * np.sqrt(np.diag(cov)).max()
        assert np.abs(np.cov(theta.T) - cov).max() < 0.05 * scale.max()


def test_two_moons_is_a_crescent_shifted_by_the_folded_parameters():
    task = get_task("two_moons")
    rng = np.random.default_rng(0)
    theta = task.prior(20_000, rng)
    x = task.simulate(theta, rng)
    shift = np.stack([-np.abs(theta.sum(axis=1)) / math.sqrt(2),
                      (theta[:, 1] - theta[:, 0]) / math.sqrt(2)], axis=1)
    p = x - shift - [0.25, 0.0]
    r = np.hypot(p[:, 0], p[:, 1])
    assert abs(r.mean() - 0.1) < 1e-3 and abs(r.std() - 0.01) < 1e-3
    assert (p[:, 0] >= 0).all()                                  # angles in [-pi/2, pi/2]
    # the fold: theta and its mirror through theta_1 + theta_2 = 0 give the same x law
    mirror = np.stack([-theta[:, 1], -theta[:, 0]], axis=1)
    assert np.allclose(task.simulate(mirror, np.random.default_rng(1)),
                       task.simulate(theta, np.random.default_rng(1)))


def test_slcp_draws_four_points_of_its_gaussian():
    theta = np.array([[0.5, -1.0, 1.2, -0.8, 0.7]])
    x = get_task("slcp").simulate(np.repeat(theta, 50_000, axis=0),
                                  np.random.default_rng(0)).reshape(-1, 2)
    s1, s2, rho = 1.2 ** 2, 0.8 ** 2, math.tanh(0.7)
    want = np.array([[s1 ** 2, rho * s1 * s2], [rho * s1 * s2, s2 ** 2]])
    assert np.allclose(x.mean(axis=0), [0.5, -1.0], atol=0.01)
    assert np.allclose(np.cov(x.T), want, atol=0.02)


def test_gaussian_mixture_and_gaussian_linear_noise():
    theta = np.zeros((40_000, 2))
    x = get_task("gaussian_mixture").simulate(theta, np.random.default_rng(0))
    narrow = np.abs(x).max(axis=1) < 0.5
    assert 0.5 < narrow.mean() < 0.7                  # the narrow half and some of the wide
    assert abs(x[~narrow].std() - 1.1) < 0.1
    g = get_task("gaussian_linear")
    t = g.prior(40_000, np.random.default_rng(1))
    assert abs(t.var() - 0.1) < 0.003
    assert abs((g.simulate(t, np.random.default_rng(2)) - t).var() - 0.1) < 0.003
    post = gaussian_linear_posterior(np.ones(10), 40_000, np.random.default_rng(3))
    assert np.allclose(post.mean(axis=0), 0.5, atol=0.01) and abs(post.var() - 0.05) < 0.002


def test_the_bernoulli_glm_spikes_by_its_filtered_stimulus_and_reports_sufficient_statistics():
    """bernoulli_glm: the design matrix is the stimulus of RandomState(42) delayed 0..8 bins
    beside a column of ones; the prior's covariance inverts its precision; each bin spikes
    with probability sigmoid(X theta); x = X^T y of the raw spikes (bernoulli_glm_raw); the
    log-posterior is the prior's plus the Bernoulli likelihood of those statistics."""
    X = glm_design()
    stim = np.random.RandomState(42).randn(100).astype(np.float32)
    assert X.shape == (100, 10) and (X[:, 0] == 1).all()
    assert X[3, 1 + 2] == stim[1] and X[1, 1 + 2] == 0.0 and X[99, 9] == stim[91]
    P = glm_prior_precision()
    assert P[0, 0] == 0.5 and np.allclose(P, P.T) and (np.linalg.eigvalsh(P) > 0).all()
    glm, raw = get_task("bernoulli_glm"), get_task("bernoulli_glm_raw")
    theta = glm.prior(100_000, np.random.default_rng(0))
    assert np.abs(np.cov(theta.T) @ P - np.eye(10)).max() < 0.05
    one = np.repeat(theta[:1], 40_000, axis=0)
    y = raw.simulate(one, np.random.default_rng(1))
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert np.allclose(y.mean(axis=0), 1 / (1 + np.exp(-X @ theta[0])), atol=0.01)
    assert np.array_equal(glm.simulate(theta[:50], np.random.default_rng(2)),
                          raw.simulate(theta[:50], np.random.default_rng(2)) @ X)
    # the log-posterior: prior + sum_i y_i psi_i - log(1 + e^psi_i), psi = X theta
    ys = raw.simulate(theta[:1], np.random.default_rng(3))[0]
    t2 = theta[1:4]
    psi = t2 @ X.T
    want = ((ys * psi - np.log1p(np.exp(psi))).sum(axis=1)
            - 0.5 * np.einsum("ni,ij,nj->n", t2, P, t2))
    assert np.allclose(glm_log_posterior(t2, ys @ X), want)


def test_an_unknown_task_is_one_line():
    with pytest.raises(FmnumpyError, match="unknown task 'three_moons'; choose one of"):
        get_task("three_moons")


# ---- the classifier two-sample test -------------------------------------------------------

def test_c2st_is_a_half_for_one_distribution_one_for_disjoint_sets_and_in_between():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((600, 2)), rng.standard_normal((600, 2))
    assert abs(c2st(a, b) - 0.5) < 0.05
    assert c2st(a, b + 8.0) == 1.0
    # N(0, I) against N(0.5 (1, 1), I): the best classifier's accuracy is Phi(0.354) = 0.638
    assert 0.58 < c2st(a, b + 0.5) < 0.69
    with pytest.raises(FmnumpyError, match="folds"):
        c2st(a, b, folds=1)


# ---- the posterior flow ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def moons():
    theta, x = simulate("two_moons", 3000, seed=0)
    q = PosteriorFlow(task="two_moons", hidden=(32, 32), seed=0)
    return q.fit_simulations(theta, x, steps=600), theta, x


def test_posterior_samples_stay_in_the_prior_and_carry_their_log_density(moons, tmp_path):
    q, theta, x = moons
    s, lq = q.sample_posterior(x[0], 400, seed=1, return_logprob=True)
    assert s.shape == (400, 2) and in_prior(get_task("two_moons"), s).all()
    assert np.abs(lq - q.log_posterior(s, x[0])).max() < 1e-3
    # the posterior of x[0] sits near the parameters that made it (or their mirror)
    t = theta[0]
    near = np.minimum(np.abs(s - t).max(axis=1), np.abs(s + t[::-1]).max(axis=1))
    assert np.median(near) < 0.25
    q.save(tmp_path / "q.npz")
    back = PosteriorFlow.load(tmp_path / "q.npz")
    assert back.task == "two_moons" and np.array_equal(back.theta_std_, q.theta_std_)
    assert np.array_equal(back.sample_posterior(x[0], 50, seed=2),
                          q.sample_posterior(x[0], 50, seed=2))


@pytest.mark.parametrize("call,words", [
    (lambda q: q.sample_posterior([0.1, 0.2, 0.3], 5), "trained on conditions of 2"),
    (lambda q: q.sample_posterior([np.nan, 0.2], 5), "not a finite number"),
    (lambda q: q.log_posterior(np.zeros((3, 5)), [0.0, 0.0]), "conditions of 2"),
    (lambda q: PosteriorFlow().fit_simulations(np.zeros((10, 2)), np.zeros((10, 2))),
     "fewer than a batch of 256"),
    (lambda q: PosteriorFlow().fit_simulations(np.zeros((300, 2)), np.zeros((299, 2))),
     "shape (300, K)"),
    (lambda q: PosteriorFlow(task="nope"), "unknown task 'nope'"),
])
def test_bad_posterior_input_is_one_line(moons, call, words):
    with pytest.raises(FmnumpyError) as e:
        call(moons[0])
    assert "\n" not in str(e.value) and words in str(e.value), str(e.value)


# ---- the command line ----------------------------------------------------------------------

def test_sbi_train_and_sample_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "q"
    assert run(["sbi", "train", "--task", "gaussian_mixture", "--simulations", 300, "--steps",
                30, "--batch-size", 64, "--out", out, "--no-progress"]) == 0
    assert (out / "posterior.png").stat().st_size > 5000
    assert json.loads((out / "metrics.json").read_text())["simulations"] == 300
    assert run(["sbi", "sample", "--checkpoint", out / "checkpoint.npz", "--x", "1.5,-2",
                "-n", 100, "--out", tmp_path / "s.npy", "--log-prob", tmp_path / "l.npy",
                "--plot", tmp_path / "s.png"]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (100, 2) and np.load(tmp_path / "l.npy").shape == (100,)
    raw = tmp_path / "raw"                      # 100 numbers a simulation, through an MLP
    assert run(["sbi", "train", "--task", "bernoulli_glm_raw", "--simulations", 300, "--steps",
                20, "--batch-size", 64, "--condition-embedding", "16,4", "--out", raw,
                "--no-progress"]) == 0
    assert PosteriorFlow.load(raw / "checkpoint.npz").spec_.embed == (16, 4)
    capsys.readouterr()
    for line, words in (
            (["sbi", "sample", "--checkpoint", out / "checkpoint.npz", "--x", "1,2,3",
              "--out", tmp_path / "t.npy"], "conditions of 2"),
            (["sbi", "train", "--task", "slcp", "--simulations", 10, "--out", tmp_path / "u"],
             "fewer than a batch"),
            (["sbi", "train", "--task", "moons", "--out", tmp_path / "u"], "unknown task"),
            (["sbi", "sample", "--checkpoint", out / "checkpoint.npz", "--x", "a,b",
              "--out", tmp_path / "t.npy"], "numbers separated by commas")):
        assert_one_line_error(capsys, run(line), *words.split(" | "))


def test_conditions_from_a_file_on_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    c = rng.uniform(-2, 2, 500)
    table = np.stack([c + 0.1 * rng.standard_normal(500), c, -c], axis=1)
    np.savetxt(tmp_path / "d.csv", table, delimiter=",")
    out = tmp_path / "m"
    assert run(["train", "--data", tmp_path / "d.csv", "--condition-columns", "1", "--steps",
                40, "--batch-size", 64, "--hidden", "16", "--out", out, "--no-plots",
                "--no-progress"]) == 0
    assert run(["sample", "--checkpoint", out / "checkpoint.npz", "--condition", "1.0",
                "-n", 20, "--out", tmp_path / "s.npy", "--log-prob", tmp_path / "l.npy"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (20, 2)
    capsys.readouterr()
    for line, words in (
            (["train", "--dataset", "moons", "--condition-columns", "1", "--out",
              tmp_path / "x"], "add --data FILE"),
            (["train", "--data", tmp_path / "d.csv", "--condition-columns", "0,1,2", "--out",
              tmp_path / "x"], "at least one data column"),
            (["train", "--data", tmp_path / "d.csv", "--condition-columns", "7", "--out",
              tmp_path / "x"], "distinct columns"),
            (["sample", "--checkpoint", out / "checkpoint.npz", "--condition", "1,2",
              "--out", tmp_path / "t.npy"], "conditions of 1"),
            (["train", "--data", tmp_path / "d.csv", "--condition-embedding", "8,2", "--out",
              tmp_path / "x"], "add them")):
        assert_one_line_error(capsys, run(line), words)


def test_early_stopping_keeps_the_best_validation_weights():
    """fit_simulations holds out a tenth, evaluates the EMA weights' loss on it every
    eval_every steps, stops after ``patience`` evaluations without a new best and keeps
    the best evaluation's EMA weights; validation_fraction=0 trains every step."""
    from fmnumpy.sbi.posterior import Validation
    theta, x = simulate("slcp", 400, seed=1)
    q = PosteriorFlow(hidden=(32, 32), seed=0, lr=1e-2)
    q.fit_simulations(theta, x, steps=3000, batch_size=64, eval_every=20, patience=3)
    steps, losses = zip(*q.validation_)
    assert q.step_ == steps[-1] < 3000 and steps == tuple(range(20, q.step_ + 1, 20))
    best = int(np.argmin(losses))
    assert len(losses) - 1 - best == 3                      # three evaluations past the best
    z = (theta - q.theta_mean_) / q.theta_std_
    held = np.random.default_rng([0, 45]).permutation(400)[:40]
    assert Validation(q, z[held], x[held]).loss(q) == pytest.approx(losses[best], rel=1e-6)
    whole = PosteriorFlow(hidden=(8,), seed=0).fit_simulations(
        theta, x, steps=50, batch_size=64, validation_fraction=0.0)
    assert whole.step_ == 50 and whole.validation_ == []


def test_a_posterior_flow_resumed_from_its_checkpoint_equals_the_unbroken_run(tmp_path):
    """Broken off mid-run (``until``), saved and loaded, fit_simulations(warm_start=True)
    ends where the unbroken run ends, early stopping's evaluations and best weights
    included; a run that stopped early takes no more steps."""
    theta, x = simulate("slcp", 400, seed=1)
    kw = dict(steps=3000, batch_size=64, eval_every=20, patience=3)
    whole = PosteriorFlow(task="slcp", hidden=(32, 32), seed=0, lr=1e-2)
    whole.fit_simulations(theta, x, **kw)
    assert whole.stopping_["stopped"] and whole.step_ < 3000
    part = PosteriorFlow(task="slcp", hidden=(32, 32), seed=0, lr=1e-2)
    part.fit_simulations(theta, x, until=whole.step_ - 50, **kw)
    assert not part.stopping_["stopped"]
    part.save(tmp_path / "q.npz")
    back = PosteriorFlow.load(tmp_path / "q.npz").fit_simulations(theta, x, warm_start=True,
                                                                  **kw)
    assert back.step_ == whole.step_ and back.validation_ == whole.validation_
    assert np.array_equal(back.ema_, whole.ema_) and np.array_equal(back.theta_, whole.theta_)
    whole.save(tmp_path / "done.npz")
    done = PosteriorFlow.load(tmp_path / "done.npz")
    assert done.fit_simulations(theta, x, warm_start=True, **kw).step_ == whole.step_
    assert np.array_equal(done.ema_, whole.ema_)
    with pytest.raises(FmnumpyError, match="same 400 simulations"):
        PosteriorFlow.load(tmp_path / "q.npz").fit_simulations(theta[:300], x[:300],
                                                               warm_start=True, **kw)


def test_sbi_train_resumes_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "q"
    line = ["sbi", "train", "--task", "two_moons", "--simulations", 600, "--steps", 1500,
            "--batch-size", 64, "--out", out, "--no-progress"]
    assert run(line) == 0
    whole = PosteriorFlow.load(out / "checkpoint.npz")
    part = PosteriorFlow(task="two_moons", seed=0)
    theta, x = simulate("two_moons", 600, seed=0)
    part.fit_simulations(theta, x, steps=1500, batch_size=64, until=1000)
    part.save(out / "checkpoint.npz")
    capsys.readouterr()
    assert run(["sbi", "train", "--out", out, "--resume", "--no-progress"]) == 0
    assert "resuming from" in capsys.readouterr().err     # the options are the checkpoint's
    back = PosteriorFlow.load(out / "checkpoint.npz")
    assert back.step_ == whole.step_ and np.array_equal(back.ema_, whole.ema_)
    for flag, value, words in (("--task", "slcp", "--task two_moons"),
                               ("--simulations", 500, "--simulations 600"),
                               ("--seed", 3, "--seed 0"),
                               ("--condition-embedding", "8,2", "--condition-embedding none"),
                               ("--batch-size", 32, "--batch-size 64"),
                               ("--weight-decay", "1", "--weight-decay 0")):
        changed = [*line, "--resume"]
        if flag in changed:
            changed[changed.index(flag) + 1] = value
        else:
            changed += [flag, value]
        assert_one_line_error(capsys, run(changed), words)
    assert_one_line_error(capsys, run(["sbi", "train", "--out", tmp_path / "none", "--resume"]),
                          "does not exist")
    assert_one_line_error(capsys, run(["sbi", "train", "--out", tmp_path / "none"]),
                          "needs --task")


def test_select_posterior_keeps_the_lowest_held_out_loss_of_comparable_flows():
    from fmnumpy.sbi import select_posterior
    theta, x = simulate("slcp", 400, seed=1)
    kw = dict(steps=300, batch_size=64, eval_every=50)
    flows = [PosteriorFlow(hidden=(16, 16), seed=0, weight_decay=w).fit_simulations(
        theta, x, **kw) for w in (0.0, 3.0)]
    q, losses = select_posterior(flows)
    assert losses == [min(v for _, v in f.validation_) for f in flows]
    assert losses[0] != losses[1] and q is flows[int(np.argmin(losses))]
    other = PosteriorFlow(hidden=(16, 16), seed=1).fit_simulations(theta, x, **kw)
    fewer = PosteriorFlow(hidden=(16, 16), seed=0).fit_simulations(theta[:300], x[:300], **kw)
    whole = PosteriorFlow(hidden=(16, 16), seed=0).fit_simulations(
        theta, x, steps=20, batch_size=64, validation_fraction=0.0)
    for bad, words in (([flows[0], other], "differ in seed"),
                       ([flows[0], fewer], "differ in simulations"),
                       ([whole], "no held-out loss"), ([], "at least one")):
        with pytest.raises(FmnumpyError, match=words):
            select_posterior(bad)


def test_sbi_train_chooses_the_weight_decay_of_lowest_held_out_loss(tmp_path, capsys):
    out = tmp_path / "q"
    line = ["sbi", "train", "--task", "slcp", "--simulations", 400, "--steps", 200,
            "--batch-size", 64, "--weight-decay", "0,3", "--out", out, "--no-progress"]
    assert run(line) == 0
    losses = json.loads((out / "metrics.json").read_text())["held_out_loss"]
    runs = {w: PosteriorFlow.load(out / f"weight_decay_{w}" / "checkpoint.npz")
            for w in ("0", "3")}
    assert losses == {w: min(v for _, v in q.validation_) for w, q in runs.items()}
    kept = PosteriorFlow.load(out / "checkpoint.npz")
    assert f"{kept.weight_decay:g}" == min(losses, key=losses.get)
    assert np.array_equal(kept.ema_, runs[min(losses, key=losses.get)].ema_)
    capsys.readouterr()
    assert run(line + ["--resume"]) == 0                    # both runs are done: kept as is
    assert capsys.readouterr().err.count("resuming from") == 2
    assert np.array_equal(PosteriorFlow.load(out / "checkpoint.npz").ema_, kept.ema_)
    for value, words in (("1,1", "distinct values"), ("a", "numbers separated by commas")):
        assert_one_line_error(capsys, run([*line[:-5], "--weight-decay", value, "--out",
                                           tmp_path / "u"]), words)


def test_the_most_steps_are_one_per_simulation_within_their_range():
    from fmnumpy.sbi.posterior import STEPS_RANGE, max_steps
    lo, hi = STEPS_RANGE
    assert [max_steps(n) for n in (1000, lo + 7, hi - 1, 10 * hi)] == [lo, lo + 7, hi - 1, hi]
