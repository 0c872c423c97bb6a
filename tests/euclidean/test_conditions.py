"""Continuous conditions (euclidean/conditions.py, docs/conditions.md): the condition
block's place in the network, dL/dtheta and dL/dc against float64 central differences,
conditional OT against brute force, fit / sample / log_prob / guidance / checkpoints, and
the one-line refusals."""
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from fmnumpy import FlowMatcher
from fmnumpy.errors import FmnumpyError
from fmnumpy.euclidean import step
from fmnumpy.euclidean.conditions import Standardizer, check_conditions, conditional_ot
from fmnumpy.euclidean.paths import STRAIGHT
from fmnumpy.nn import mlp

from reference import (NAME, SETTINGS, assert_grad_close, away_from_kinks, central_diff,
                       features_ref, kinds, mlp_ref, no_noise, time_only)


def cond_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, y):
    """The CFM loss of the straight path with the condition block y (B, K + 1) after the
    time features, in NumPy."""
    xt = (1.0 - t[:, None]) * x0 + t[:, None] * x1
    X = np.concatenate([features_ref(xt, t, n_freq), y], axis=1)
    v, zs = mlp_ref(theta, sizes, kind, X)
    return np.mean((v - (x1 - x0)) ** 2), zs


@SETTINGS
@given(kind=kinds, seed=st.integers(0, 2**31 - 1), K=st.integers(1, 3), D=st.integers(1, 3),
       B=st.integers(1, 5), n_freq=st.integers(0, 2),
       hidden=st.lists(st.integers(1, 6), min_size=1, max_size=2).map(tuple))
def test_the_loss_with_a_condition_and_its_gradients_match_finite_differences(
        kind, seed, K, D, B, n_freq, hidden):
    """step.loss_and_grad with a condition block: the loss to 1e-12 of NumPy's, dL/dtheta
    (W_1's condition rows included) and dL/dc (mlp_backward's dX, what an embedding below
    the network takes) to central differences, in float64."""
    rng = np.random.default_rng(seed)
    sizes = mlp.layer_sizes(D, hidden, n_freq, n_cond=K)
    theta = mlp.init_params(sizes, rng, dtype=np.float64) * 1.5
    x0, x1 = rng.standard_normal((B, D)), 2.0 * rng.standard_normal((B, D))
    t = rng.random(B)
    y = np.concatenate([rng.standard_normal((B, K)), np.ones((B, 1))], axis=1)
    L_ref, zs = cond_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, y)
    assume(away_from_kinks(zs, kind))
    feats = time_only(n_freq, D)
    ws = mlp.Workspace(sizes, B, dtype=np.float64)
    work = tuple(np.zeros((B, D)) for _ in range(3)) + ws.buffers()
    dtheta = np.zeros_like(theta)
    L = step.loss_and_grad(theta, dtheta, (sizes, kind, feats), (STRAIGHT, 0.0),
                           (x0, x1, t, no_noise(x0), y), work)
    assert L == pytest.approx(L_ref, rel=1e-12, abs=1e-14)
    off = mlp.label_offset(D, feats)
    assert sizes[0] == off + K + 1 and np.array_equal(ws.X[:, off:], y)
    fd = central_diff(lambda: cond_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, y)[0],
                      theta)
    assert_grad_close(f"dL/dtheta K={K} sizes={sizes.tolist()}", dtheta, fd)
    # dL/dX of the condition's columns, from the cached forward of the step
    v = ws.A[B * int(sizes[1:-1].sum()):].reshape(B, D)
    dv = 2.0 * (v - (x1 - x0)) / (B * D)
    dX = np.zeros_like(ws.X)
    mlp.mlp_backward(dv, theta, sizes, kind, ws.X, ws.A, ws.Z, np.zeros_like(theta),
                     ws.G1, ws.G2, ws.S, dX)
    c = y[:, :K].copy()
    fd_c = central_diff(lambda: cond_loss_ref(theta, sizes, kind, n_freq, x0, x1, t,
                                              np.concatenate([c, y[:, K:]], axis=1))[0], c)
    assert_grad_close(f"dL/dc K={K}", dX[:, off:off + K], fd_c)


def embedded_loss_ref(theta, spec, x0, x1, t, y):
    """The CFM loss of a network whose condition enters through its embedding: the block
    [f MLP_e(c), f] for y = [c, f], in NumPy (MLP_e's parameters after the network's)."""
    P, K = spec.n_net_params, spec.n_cond
    e, ze = mlp_ref(theta[P:], spec.embed_sizes, spec.kind, y[:, :K])
    block = np.concatenate([y[:, K:] * e, y[:, K:]], axis=1)
    L, zs = cond_loss_ref(theta[:P], spec.sizes, spec.kind, 0, x0, x1, t, block)
    return L, zs + ze


@SETTINGS
@given(kind=kinds, seed=st.integers(0, 2**31 - 1), K=st.integers(1, 6), D=st.integers(1, 3),
       B=st.integers(1, 5), hidden=st.lists(st.integers(1, 5), min_size=1, max_size=2).map(tuple),
       embed=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple))
def test_the_condition_embedding_and_its_gradients_match_finite_differences(
        kind, seed, K, D, B, hidden, embed):
    """step.embedded_loss_and_grad: the loss to 1e-12 of NumPy's, dL/dtheta of the network
    and of the embedding MLP_e, and dL/dc through MLP_e (mlp.embed_backward's dC) to central
    differences in float64; a null row (f = 0) gives MLP_e no gradient."""
    rng = np.random.default_rng(seed)
    spec = mlp.MLPSpec(D, hidden, NAME[kind], n_cond=K, embed=embed)
    theta = spec.init_params(rng, np.float64) * 1.5
    x0, x1 = rng.standard_normal((B, D)), 2.0 * rng.standard_normal((B, D))
    t = rng.random(B)
    f = (rng.random((B, 1)) < 0.7).astype(np.float64)           # some null rows
    f[0] = 1.0
    y = np.concatenate([rng.standard_normal((B, K)) * f, f], axis=1)
    L_ref, zs = embedded_loss_ref(theta, spec, x0, x1, t, y)
    assume(away_from_kinks(zs, kind))
    ws = mlp.Workspace(spec.sizes, B, dtype=np.float64)
    work = tuple(np.zeros((B, D)) for _ in range(3)) + ws.buffers()
    ework = mlp.EmbedWork(spec, B, np.float64).buffers()
    dtheta = np.full_like(theta, 7.0)                           # overwritten
    embed_arg = (spec.embed_sizes, spec.n_net_params)
    L = step.embedded_loss_and_grad(theta, dtheta, (spec.sizes, spec.kind, spec.feats),
                                    embed_arg, (STRAIGHT, 0.0), (x0, x1, t, no_noise(x0), y),
                                    work, ework)
    assert L == pytest.approx(L_ref, rel=1e-12, abs=1e-14)
    fd = central_diff(lambda: embedded_loss_ref(theta, spec, x0, x1, t, y)[0], theta)
    assert_grad_close(f"dL/dtheta K={K} embed={embed} sizes={spec.sizes.tolist()}", dtheta, fd)
    # dL/dc through the embedding: MLP_e's backward again, now asking for dC
    C, Ae, Ze, G1e, G2e, Se, Y, dX, dE = ework
    dC = np.zeros((B, K))
    mlp.embed_backward(dX, mlp.label_offset(D, spec.feats), y, theta[spec.n_net_params:],
                       spec.embed_sizes, spec.kind, (C, Ae, Ze, G1e, G2e, Se),
                       np.zeros(theta.shape[0] - spec.n_net_params), dE, dC)
    c = y[:, :K].copy()
    fd_c = central_diff(lambda: embedded_loss_ref(
        theta, spec, x0, x1, t, np.concatenate([c, y[:, K:]], axis=1))[0], c)
    assert_grad_close(f"dL/dc K={K} embed={embed}", dC, fd_c)
    assert not dC[f[:, 0] == 0].any()


def test_the_condition_block_and_its_null():
    X = np.full((2, 6), 9.0)
    mlp.condition_features(np.array([[0.5, -1.0, 1.0], [2.0, 3.0, 1.0]]), 3, X)
    assert X[:, 3:].tolist() == [[0.5, -1.0, 1.0], [2.0, 3.0, 1.0]] and (X[:, :3] == 9).all()
    mlp.null_condition(np.zeros((2, 3)), 3, X)
    assert (X[:, 3:] == 0).all()
    mlp.condition_features(np.array([1, 0]), 3, X)             # labels: the one-hot
    assert X[:, 3:].tolist() == [[0, 1, 0], [1, 0, 0]]
    mlp.null_condition(np.array([1, 0]), 3, X)
    assert X[:, 3:].tolist() == [[0, 0, 1], [0, 0, 1]]
    s = Standardizer.fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert s.std.tolist() == [1.0, 1.0] and s.block(np.array([[3.0, 6.0]])).tolist() == \
        [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("beta", [0.0, 4.0, 1e4])
def test_conditional_ot_is_the_exact_assignment_of_the_joint_cost(beta):
    """conditional_ot: x0 permuted to the assignment minimising ||x0 - x1||^2 + beta
    ||c0 - c1||^2 with c0 the batch's conditions permuted by the same rng; the x1 and
    their conditions stay in place; beta large pairs within equal conditions."""
    rng = np.random.default_rng(3)
    B = 6
    x0, x1 = rng.standard_normal((B, 2)), rng.standard_normal((B, 2))
    c = np.repeat([[0.0], [5.0]], 3, axis=0)
    y = np.concatenate([c, np.ones((B, 1))], axis=1)
    got = conditional_ot(beta)(x0, x1, y, np.random.default_rng(7))
    c0 = c[np.random.default_rng(7).permutation(B)]
    cost = lambda p: sum(((x0[p[i]] - x1[i]) ** 2).sum() + beta * ((c0[p[i]] - c[i]) ** 2).sum()
                         for i in range(B))          # noqa: E731
    best = min(itertools.permutations(range(B)), key=cost)
    assert np.allclose(got, x0[list(best)])
    if beta > 100:
        assert all(c0[best[i]][0] == c[i][0] for i in range(B))


def conditional_gaussian(n, seed):
    """x | c ~ N((c, -c), 0.2^2 I), c ~ U(-2, 2)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-2, 2, size=(n, 1))
    return np.concatenate([c, -c], axis=1) + 0.2 * rng.standard_normal((n, 2)), c


@pytest.fixture(scope="module")
def fitted():
    x, c = conditional_gaussian(2000, 0)
    return FlowMatcher(hidden=(32, 32), seed=0).fit(x, steps=800, conditions=c), x, c


def test_samples_follow_the_condition_and_guidance_sharpens_them(fitted):
    fm, _, _ = fitted
    for cv in (-1.5, 0.0, 1.0):
        s = fm.sample(2000, condition=[cv], seed=1)
        assert np.abs(s.mean(axis=0) - [cv, -cv]).max() < 0.15
        assert 0.15 < s.std(axis=0).max() < 0.4
    per_row = fm.sample(4, condition=np.array([[-1.0], [-1.0], [1.0], [1.0]]), seed=1)
    assert per_row[:2, 0].max() < 0 < per_row[2:, 0].min()
    guided = fm.sample(2000, condition=[1.0], guidance=2.0, seed=1)
    assert guided.std(axis=0).max() < fm.sample(2000, condition=[1.0], seed=1).std(axis=0).max()
    assert fm.sample(2000, seed=1).std(axis=0).min() > 0.6      # the null: every condition
    v = fm.velocity(np.zeros((3, 2)), 0.5, condition=[1.0])
    assert v.shape == (3, 2) and not np.allclose(v, fm.velocity(np.zeros((3, 2)), 0.5))


def test_samples_log_densities_equal_log_prob_of_the_same_points(fitted):
    fm, _, _ = fitted
    x, lp = fm.sample(300, condition=[0.5], return_logprob=True, seed=2, dtype="float64")
    again = fm.log_prob(x, condition=[0.5], dtype="float64")
    assert np.abs(lp - again).max() < 1e-4
    # and the density depends on the condition: higher where the samples are
    assert fm.log_prob(x, condition=[0.5]).mean() > fm.log_prob(x, condition=[-1.5]).mean() + 5


def test_checkpoints_and_resuming_keep_the_condition(fitted, tmp_path):
    fm, x, c = fitted
    fm.save(tmp_path / "m.npz")
    back = FlowMatcher.load(tmp_path / "m.npz")
    assert np.array_equal(back.sample(50, condition=[0.3]), fm.sample(50, condition=[0.3]))
    whole = FlowMatcher(hidden=(8,), seed=1).fit(x, steps=60, conditions=c, batch_size=32)
    part = FlowMatcher(hidden=(8,), seed=1).fit(x, steps=60, conditions=c, batch_size=32,
                                                until=25)
    part.save(tmp_path / "p.npz")
    part = FlowMatcher.load(tmp_path / "p.npz").fit(x, steps=60, conditions=c, batch_size=32,
                                                     warm_start=True)
    assert np.array_equal(part.theta_, whole.theta_)


def test_conditional_ot_trains_and_pairs_nearby_conditions(fitted):
    _, x, c = fitted
    fm = FlowMatcher(hidden=(16,), seed=0, coupling="exact_ot", condition_beta=100.0)
    fm.fit(x, steps=30, conditions=c, batch_size=64)
    assert np.isfinite(fm.losses_).all()


def long_condition(n, seed):
    """x | c ~ N((m, -m), 0.2^2 I), m the mean of the 12 numbers of c ~ U(-2, 2)^12 times 2."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-2, 2, size=(n, 12))
    m = 2.0 * c.mean(axis=1, keepdims=True)
    return np.concatenate([m, -m], axis=1) + 0.2 * rng.standard_normal((n, 2)), c


def test_a_condition_embedding_trains_samples_scores_and_resumes(tmp_path):
    """condition_embedding=(16, 4): a 12-number condition through MLP_e into 4 numbers;
    samples follow it, their log-densities equal log_prob's, a checkpoint keeps MLP_e and a
    resumed run equals an unbroken one bit for bit."""
    x, c = long_condition(3000, 0)
    fm = FlowMatcher(hidden=(32, 32), seed=0, condition_embedding=(16, 4))
    fm.fit(x, steps=1000, conditions=c)
    sp = fm.spec_
    assert sp.sizes[0] == mlp.label_offset(2, sp.feats) + 4 + 1
    assert fm.theta_.shape == (sp.n_net_params + 12 * 16 + 16 + 16 * 4 + 4,)
    for k in (0, 7):
        s = fm.sample(1000, condition=c[k], seed=1)
        m = 2.0 * c[k].mean()
        assert np.abs(s.mean(axis=0) - [m, -m]).max() < 0.2, (k, s.mean(axis=0), m)
    z, lp = fm.sample(200, condition=c[0], return_logprob=True, seed=2, dtype="float64")
    assert np.abs(lp - fm.log_prob(z, condition=c[0], dtype="float64")).max() < 1e-4
    fm.save(tmp_path / "e.npz")
    back = FlowMatcher.load(tmp_path / "e.npz")
    assert back.spec_.embed == (16, 4)
    assert np.array_equal(back.sample(50, condition=c[3]), fm.sample(50, condition=c[3]))
    kw = dict(steps=40, conditions=c, batch_size=32)
    whole = FlowMatcher(hidden=(8,), seed=1, condition_embedding=(3,)).fit(x, **kw)
    part = FlowMatcher(hidden=(8,), seed=1, condition_embedding=(3,)).fit(x, until=15, **kw)
    part.save(tmp_path / "p.npz")
    part = FlowMatcher.load(tmp_path / "p.npz").fit(x, warm_start=True, **kw)
    assert np.array_equal(part.theta_, whole.theta_)


@pytest.mark.parametrize("call,words", [
    (lambda fm: FlowMatcher(hidden=(4,), condition_embedding=(3,)).fit("moons", steps=2),
     "pass conditions="),
    (lambda fm: FlowMatcher(condition_embedding=(3, 0)), "condition_embedding must be positive"),
    (lambda fm: FlowMatcher(condition_embedding="a"), "condition_embedding must be positive"),
    (lambda fm: fm.sample(3, condition=[1.0, 2.0]), "has 2 numbers; the model was trained on conditions of 1"),
    (lambda fm: fm.sample(3, condition=np.zeros((2, 1))), "(3, K)"),
    (lambda fm: fm.sample(3, condition=np.zeros((3, 2))), "conditions of 1"),
    (lambda fm: fm.sample(3, condition=[np.nan]), "not a finite number"),
    (lambda fm: fm.sample(3, labels=1), "not labels"),
    (lambda fm: fm.log_prob(np.zeros((2, 2)), condition=[np.inf]), "not a finite number"),
    (lambda fm: FlowMatcher(hidden=(4,)).fit("moons", steps=2, conditions=np.zeros((5, 1))),
     "named distribution"),
    (lambda fm: FlowMatcher(hidden=(4,)).fit(np.zeros((5, 2)), steps=2,
                                             conditions=np.zeros((4, 1))), "shape (5, K)"),
    (lambda fm: FlowMatcher(hidden=(4,)).fit(np.zeros((5, 2)), steps=2,
                                             conditions=[[1.0]] * 4 + [[np.nan]]),
     "row 5, column 1"),
    (lambda fm: FlowMatcher(hidden=(4,), objective="meanflow").fit(
        np.zeros((5, 2)), steps=2, conditions=np.zeros((5, 1))), "objective 'fm'"),
    (lambda fm: FlowMatcher(hidden=(4,), coupling="sinkhorn").fit(
        np.zeros((5, 2)), steps=2, conditions=np.zeros((5, 1))), "conditional OT"),
    (lambda fm: FlowMatcher(hidden=(4,)).fit("moons", steps=2).sample(2, condition=[0.0]),
     "trained without conditions"),
    (lambda fm: FlowMatcher(condition_beta=-1.0), "condition_beta"),
])
def test_bad_conditions_are_one_line(fitted, call, words):
    with pytest.raises(FmnumpyError) as e:
        call(fitted[0])
    assert "\n" not in str(e.value) and words in str(e.value), str(e.value)


def test_check_conditions_takes_integers_and_refuses_text():
    assert check_conditions([[1], [2]], 2).dtype == np.float64
    with pytest.raises(FmnumpyError, match="must be numbers"):
        check_conditions(np.array([["a"], ["b"]]), 2)


def test_the_whole_distribution_draws_labels_or_conditions_from_the_data(fitted, tmp_path):
    """sample() of a conditional model given neither labels nor a condition: marginal
    "data" (the default) samples each point at a label or condition drawn from the
    training data's own (rng [seed, 47]); "null" at the null condition."""
    fm, x, c = fitted
    rng = np.random.default_rng([5, 47])
    drawn = fm.cond_rows_[rng.integers(0, c.shape[0], size=300)]
    assert np.array_equal(fm.sample(300, seed=5), fm.sample(300, seed=5, condition=drawn))
    assert np.array_equal(fm.sample(300, seed=5, marginal="null"),
                          fm.sample(300, seed=5, condition=None, marginal="null"))
    assert not np.array_equal(fm.sample(300, seed=5), fm.sample(300, seed=5, marginal="null"))
    fm.save(tmp_path / "m.npz")
    assert np.array_equal(FlowMatcher.load(tmp_path / "m.npz").sample(30, seed=2),
                          fm.sample(30, seed=2))
    lab = FlowMatcher(hidden=(8,), seed=0).fit("8gaussians", steps=5, labels=True)
    assert lab.class_freq_.shape == (8,) and abs(lab.class_freq_ - 1 / 8).max() < 0.01
    y = np.random.default_rng([3, 47]).choice(8, size=40, p=lab.class_freq_)
    assert np.array_equal(lab.sample(40, seed=3), lab.sample(40, seed=3, labels=y))
    lab.save(tmp_path / "l.npz")
    assert np.array_equal(FlowMatcher.load(tmp_path / "l.npz").class_freq_, lab.class_freq_)
    with pytest.raises(FmnumpyError, match="marginal must be one of: data, null"):
        lab.sample(3, marginal="all")
