"""Discrete flow matching: every gradient against float64 central differences and an
independent NumPy forward, the mixture path, the jump sampler and the ELBO against
exact answers (docs/discrete.md)."""
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fmnumpy
from fmnumpy.discrete import mixture as dfm
from fmnumpy.nn.activations import ACTIVATIONS
from fmnumpy.discrete.estimator import DiscreteFlowMatcher
from fmnumpy.errors import FmnumpyError
from fmnumpy.nn.mlp import init_params
from fmnumpy.discrete.tokens import TokenData, checkerboard_pmf, total_variation, tv_floor

from reference import (SETTINGS, assert_grad_close, assert_one_line_error, central_diff,
                       mlp_ref, run)


# ---- an independent float64 reference of the loss -------------------------------------

def loss_ref(theta, sizes, kind, n_freq, K, E, x1, xt, t, w):
    """l = -(1 / (B D)) sum w_id log softmax(logits_id)[x1_id], written from the
    equations with NumPy."""
    B, D = x1.shape
    emb = theta[:K * E].reshape(K, E)
    cols = [emb[xt].reshape(B, D * E), t[:, None]]
    for k in range(n_freq):
        cols += [np.sin(np.pi * 2.0 ** k * t)[:, None], np.cos(np.pi * 2.0 ** k * t)[:, None]]
    logits = mlp_ref(theta[K * E:], sizes, kind, np.concatenate(cols, axis=1))[0]
    z = logits.reshape(B, D, -1)
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, x1[..., None], axis=-1)[..., 0]
    return -(w * picked).sum() / (B * D)


def problem(seed, V, D, B, E, hidden, n_freq, source):
    rng = np.random.default_rng(seed)
    K = dfm.token_count(V, source)
    sizes = dfm.net_sizes(D, V, E, hidden, n_freq)
    theta = np.concatenate([rng.standard_normal(K * E), 1.5 * init_params(sizes, rng, np.float64)])
    x1 = rng.integers(0, V, (B, D))
    t = rng.random(B)
    x0 = dfm.draw_source(source, V, (B, D), rng)
    xt = dfm.mixture_path(x0, x1, t, 1.0, rng.random((B, D)))
    w = dfm.position_weights(source, xt, V, np.float64)
    return sizes, theta, K, x1, xt, t, w


problems = dict(seed=st.integers(0, 10_000), V=st.integers(2, 6), D=st.integers(1, 3),
                B=st.integers(1, 5), E=st.integers(1, 3),
                hidden=st.lists(st.integers(1, 5), min_size=1, max_size=2).map(tuple),
                n_freq=st.integers(0, 2), source=st.sampled_from(dfm.SOURCES))


@SETTINGS
@given(**problems)
def test_loss_and_grad_match_a_numpy_reference_and_finite_differences(seed, V, D, B, E, hidden,
                                                                      n_freq, source):
    sizes, theta, K, x1, xt, t, w = problem(seed, V, D, B, E, hidden, n_freq, source)
    kind = ACTIVATIONS["silu"]
    net = (sizes, kind, n_freq, K, E)
    work = dfm.DiscreteWork(sizes, B, np.float64).buffers(B)
    dtheta = np.full_like(theta, np.nan)                   # overwritten, not accumulated
    loss = dfm.loss_and_grad(theta, dtheta, net, x1, xt, t, w, work)
    ref = loss_ref(theta, sizes, kind, n_freq, K, E, x1, xt, t, w)
    assert abs(loss - ref) <= 1e-12 * max(1.0, abs(ref))
    fd = central_diff(lambda: loss_ref(theta, sizes, kind, n_freq, K, E, x1, xt, t, w), theta)
    assert_grad_close(f"discrete loss {source} V={V} D={D} E={E} {hidden}", dtheta, fd)


@SETTINGS
@given(seed=st.integers(0, 10_000), B=st.integers(1, 5), D=st.integers(1, 4),
       V=st.integers(2, 7))
def test_softmax_cross_entropy_backward_matches_finite_differences(seed, B, D, V):
    rng = np.random.default_rng(seed)
    logits = 3 * rng.standard_normal((B, D * V))
    x1 = rng.integers(0, V, (B, D))
    w = (rng.random((B, D)) < 0.7).astype(np.float64)
    P = np.empty_like(logits)

    def f():
        dfm.softmax_forward(logits, D, P)
        return dfm.xent_forward(P, x1, w)

    f()
    np.testing.assert_allclose(P.reshape(B, D, V).sum(-1), 1.0, rtol=1e-12)
    dlogits = np.empty_like(logits)
    dfm.xent_backward(P, x1, w, dlogits)
    assert_grad_close("softmax + cross-entropy", dlogits, central_diff(f, logits))


def test_embedding_backward_is_the_adjoint_of_its_forward():
    """<dX, embed(emb)> = <embedding_backward(dX), emb> for random dX: the backward is
    the transpose of the (linear) lookup, repeated tokens included."""
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((5, 3))
    xt = np.array([[0, 4, 4], [2, 2, 0]])
    X = np.zeros((2, 9))
    dfm.embedding_forward(emb, xt, X)
    np.testing.assert_array_equal(X[1, 3:6], emb[2])
    dX = rng.standard_normal(X.shape)
    demb = np.zeros_like(emb)
    dfm.embedding_backward(dX, xt, demb)
    assert abs((dX * X).sum() - (demb * emb).sum()) < 1e-12
    assert not demb[[1, 3]].any()                          # unused tokens: no gradient


def test_mixture_path_keeps_x1_with_probability_kappa():
    rng = np.random.default_rng(0)
    n, D, V = 200_000, 2, 10
    x1 = rng.integers(0, V, (n, D))
    for source in dfm.SOURCES:
        for t, power in ((0.3, 1.0), (0.6, 2.0)):
            x0 = dfm.draw_source(source, V, (n, D), rng)
            xt = dfm.mixture_path(x0, x1, np.full(n, t), power, rng.random((n, D)))
            kept = np.mean(xt == x1)
            want = t ** power + (1 - t ** power) * (1.0 / V if source == dfm.UNIFORM else 0.0)
            assert abs(kept - want) < 4e-3, (source, t, kept, want)
            if source == dfm.MASK:
                assert set(np.unique(xt[xt != x1])) <= {V}


# ---- the exact posterior of a known pmf --------------------------------------------------

def exact_posterior(pmf, source, power):
    """p(x1^d | xt) of the mixture path from the pmf (V, V) by Bayes' rule."""
    V = pmf.shape[0]

    def posterior(xt, t, ema=True):
        xt = np.asarray(xt)
        kap = float(np.ravel(t)[0]) ** power
        onehot = np.arange(V)[None, :] == xt[:, :, None]               # (N, 2, V)
        if source == dfm.MASK:
            lik = np.where((xt == V)[:, :, None], 1.0 - kap, kap * onehot)
        else:
            lik = (1.0 - kap) / V + kap * onehot
        joint = pmf[None] * lik[:, 0, :, None] * lik[:, 1, None, :]   # (N, V, V)
        m = np.stack([joint.sum(2), joint.sum(1)], axis=1)
        return m / m.sum(-1, keepdims=True)
    return posterior


def with_exact_posterior(V, source, power=1.0, **kw):
    fm = DiscreteFlowMatcher(vocab_size=V, source=source, hidden=(4,), power=power, **kw)
    fm._init_state(2)
    data = TokenData("discrete_checkerboard", V)
    fm.posterior = exact_posterior(data.pmf, source, power)
    return fm, data


@pytest.mark.parametrize("source,power", [("mask", 1.0), ("uniform", 1.0), ("mask", 2.0)])
def test_jump_sampler_with_the_exact_posterior_draws_the_pmf(source, power):
    fm, data = with_exact_posterior(8, source, power)
    x = fm.sample(20_000, seed=1, steps=50)
    assert x.min() >= 0 and x.max() < 8
    tv = total_variation(x, data.draw(20_000, np.random.default_rng(2)), 8, 8)
    floor, sd = tv_floor(data, 20_000, 10, 8)
    # the O(h) error of drawing positions that jump in one step independently: at
    # power 2 over three seeds 0.031 (left-end rule) and 0.034 (exact rule), floor 0.021
    assert tv < floor + 6 * sd, (tv, floor, sd)
    # both positions jumping in one step draw from their marginals independently: the
    # Euler sampler's O(h) error puts that fraction off the board
    off = np.mean(data.log_prob(x) == -np.inf)
    assert off < 1.5 / 50, off


@pytest.mark.parametrize("source", dfm.SOURCES)
def test_jump_sampler_below_power_one(source):
    """kappa_t = t^0.5 has an infinite rate at t = 0; the exact step probability
    (kappa_(t+h) - kappa_t) / (1 - kappa_t) still unmasks gradually (the left-end rule
    h lambda_t unmasked everything in the first step: half the samples off the board)."""
    fm, data = with_exact_posterior(8, source, power=0.5)
    x = fm.sample(20_000, seed=1, steps=50)
    off = np.mean(data.log_prob(x) == -np.inf)
    assert off < 0.05, off
    tv = total_variation(x, data.draw(20_000, np.random.default_rng(2)), 8, 8)
    floor, sd = tv_floor(data, 20_000, 10, 8)
    assert tv < floor + 6 * sd, (tv, floor, sd)


def test_jump_probability_is_the_conditional_probability_of_arriving():
    for n in (0.5, 1.0, 3.0):
        t, h = 0.3, 0.05
        p = dfm.jump_probability(t, h, n, False)
        assert abs(p - ((t + h) ** n - t ** n) / (1 - t ** n)) < 1e-15
        assert 0.0 < dfm.jump_probability(0.0, h, n, False) < 1.0     # finite at t = 0
        assert dfm.jump_probability(1 - h, h, n, True) == 1.0
    assert abs(dfm.jump_probability(0.3, 0.05, 1.0, False) - 0.05 * dfm.jump_rate(0.3, 1.0)) < 1e-15


def uniform_elbo_by_enumeration(pmf, x1, n_tau=400, tau_max=30.0):
    """-sum_d int_0^inf ((1 - s) E_noised[F] + s E_kept[G]) dtau (docs/discrete.md#elbo)
    for the exact posterior of the uniform source, every expectation an exact sum over
    the tokens of the two positions, trapezoid in tau: the oracle of the ELBO's value."""
    V = pmf.shape[0]
    post = exact_posterior(pmf, dfm.UNIFORM, 1.0)
    tau = np.linspace(0.0, tau_max, n_tau + 1)
    out = np.zeros(x1.shape[0])
    for r, (a, b) in enumerate(x1):
        vals = []
        for tk in tau:
            s = -np.expm1(-tk)
            total = 0.0
            for d in range(2):
                want, other = (a, b)[d], (a, b)[1 - d]
                p_other = np.full(V, (1.0 - s) / V)
                p_other[other] += s
                xs = np.array([[u, o] if d == 0 else [o, u] for u in range(V) for o in range(V)])
                P = post(xs, s)                                   # (V V, 2, V)
                pd = P[:, d, :].reshape(V, V, V)                  # [u, o, y]
                F = np.zeros((V, V))
                for u in range(V):
                    F[u] = (u != want) * (-np.log(pd[u, :, want]) - 1.0) + 1.0 - pd[u, :, u]
                G = 1.0 - pd[want, :, want]
                EF = (F * p_other[None, :]).sum() / V             # x^d uniform
                EG = (G * p_other).sum()
                total += (1.0 - s) * EF + s * EG
            vals.append(total)
        vals = np.array(vals)
        out[r] = -np.sum(0.5 * (vals[1:] + vals[:-1]) * np.diff(tau))
    return out


def test_uniform_elbo_matches_an_exact_enumeration():
    """The value of the uniform source's bound is pinned: the estimator (quadrature in
    tau, Monte Carlo over the other position) against the exact sum over all states."""
    V = 8
    fm, data = with_exact_posterior(V, "uniform")
    pts = data.draw(12, np.random.default_rng(5))
    want = uniform_elbo_by_enumeration(data.pmf, pts)
    e = fm.elbo(np.repeat(pts, 40, axis=0), quad=24, mc=4).reshape(12, 40).mean(1)
    # Monte Carlo noise of 160 draws a token: at most 0.064 per token, 0.011 in the mean
    assert abs(e.mean() - want.mean()) < 0.03, (e.mean(), want.mean())
    assert np.abs(e - want).max() < 0.12, (e, want)
    assert abs(fm.elbo_tail_) < 1e-3                  # converged before tau = 12


def test_elbo_is_tight_for_the_mask_source_and_below_for_the_uniform_one():
    """With the exact posterior the masked bound equals log p (the model's path measure
    given x1 is the conditional one, docs/discrete.md#elbo); the uniform bound is
    strictly below it (a path may visit wrong tokens before x1)."""
    pts = TokenData("discrete_checkerboard", 8).draw(300, np.random.default_rng(5))
    fm, data = with_exact_posterior(8, "mask")
    e = fm.elbo(pts, quad=24, mc=8)
    logp = data.log_prob(pts)
    assert abs(e.mean() - logp.mean()) < 0.02, (e.mean(), logp.mean())
    fm, data = with_exact_posterior(8, "uniform")
    e = fm.elbo(pts, quad=24, mc=8)
    assert e.mean() < logp.mean() - 0.2


def model_log_likelihood(fm, T=14.0, n=700):
    """log q(x) of the model's own continuous-time Markov chain on 2 positions, by
    integrating its forward equation over all K^2 states with RK4 in tau = -log(1 - s),
    s = kappa_t (the jump rate per unit tau is p(y | x): lambda dt = dtau)."""
    V, K = fm.vocab_size, fm.K
    states = np.array([(i, j) for i in range(K) for j in range(K)])
    idx = {tuple(s): k for k, s in enumerate(states)}
    q = np.zeros(len(states))
    if fm.source == dfm.MASK:
        q[idx[(V, V)]] = 1.0
    else:
        q[[idx[(i, j)] for i in range(V) for j in range(V)]] = 1.0 / V ** 2

    def rates(tau):
        t = (1.0 - np.exp(-tau)) ** (1.0 / fm.power)
        P = fm.posterior(states, np.float32(t)).astype(np.float64)   # (S, 2, V)
        R = np.zeros((len(states), len(states)))
        for a, x in enumerate(states):
            for d in range(2):
                if fm.source == dfm.MASK and x[d] != V:
                    continue
                for y in range(V):
                    if y != x[d]:
                        z = x.copy()
                        z[d] = y
                        R[a, idx[tuple(z)]] += P[a, d, y]
            R[a, a] = -R[a].sum()
        return R

    h = T / n
    for k in range(n):
        tau = k * h
        R0, Rm, R1 = rates(tau), rates(tau + h / 2), rates(tau + h)
        k1 = q @ R0
        k2 = (q + h / 2 * k1) @ Rm
        k3 = (q + h / 2 * k2) @ Rm
        k4 = (q + h * k3) @ R1
        q = q + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    grid = np.array([[q[idx[(i, j)]] for j in range(V)] for i in range(V)])
    return np.log(grid)


@pytest.mark.parametrize("source", dfm.SOURCES)
def test_elbo_of_a_trained_network_is_below_its_exact_log_likelihood(source):
    """The bound against log q(x) computed exactly for the network's own chain (V = 4,
    all 16 tokens): below it, and the chain's distribution sums to 1."""
    fm = DiscreteFlowMatcher(vocab_size=4, source=source, hidden=(16,), embed=4, seed=1)
    fm.fit("discrete_checkerboard", steps=300, batch_size=64)
    logq = model_log_likelihood(fm)
    assert abs(np.exp(logq).sum() - 1.0) < 2e-3
    pts = np.array([(i, j) for i in range(4) for j in range(4)])
    e = fm.elbo(pts, quad=32, mc=64)
    gap = logq.ravel() - e
    assert np.all(gap > -0.03), gap
    assert (np.exp(logq).ravel() * gap).sum() > 0


# ---- training, resuming, checkpoints -----------------------------------------------------

def test_resumed_training_continues_bit_for_bit(tmp_path):
    kw = dict(vocab_size=8, hidden=(8,), embed=2, seed=3)
    a = DiscreteFlowMatcher(**kw).fit("discrete_8gaussians", steps=20, batch_size=16)
    b = DiscreteFlowMatcher(**kw).fit("discrete_8gaussians", steps=20, batch_size=16, until=8)
    b.save(tmp_path / "c.npz")
    b = DiscreteFlowMatcher.load(tmp_path / "c.npz")
    assert b.state_.step == 8
    b.fit("discrete_8gaussians", steps=20, batch_size=16, warm_start=True)   # 20 in total
    np.testing.assert_array_equal(a.state_.buf, b.state_.buf)
    assert a.state_.losses == b.state_.losses
    np.testing.assert_array_equal(a.sample(50, seed=4), b.sample(50, seed=4))


def test_training_lowers_the_loss_and_learns_the_checkerboard():
    fm = DiscreteFlowMatcher(vocab_size=16, hidden=(64, 64), embed=8, seed=0)
    fm.fit("discrete_checkerboard", steps=400, batch_size=256)
    losses = np.array(fm.state_.losses)
    # the marginals of the checkerboard are uniform: the loss can only fall from
    # log(16) / 2 at the start towards about 1.2 (docs/discrete.md#loss)
    assert losses[-50:].mean() < losses[:50].mean() - 0.05
    x = fm.sample(4000, seed=2, steps=20)
    on = TokenData("discrete_checkerboard", 16).log_prob(x) > -np.inf
    assert on.mean() > 0.9                               # most samples on black squares


def test_interrupt_saves_a_checkpoint(tmp_path):
    class Stop:
        def __init__(self, total, initial):
            pass

        def update(self, k, loss, rate):
            raise KeyboardInterrupt

        def close(self):
            pass

    fm = DiscreteFlowMatcher(vocab_size=8, hidden=(8,), embed=2)
    with pytest.raises(KeyboardInterrupt):
        fm.fit("discrete_checkerboard", steps=10**6, batch_size=8, progress=Stop,
               checkpoint=tmp_path / "c.npz")
    back = DiscreteFlowMatcher.load(tmp_path / "c.npz")
    assert 1 <= back.state_.step < 10**6
    np.testing.assert_array_equal(back.state_.theta, fm.state_.theta)


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,words", [
    ([[0, 1], [2, -1]], ("row 2", "column 2", "outside [0, 8)")),
    ([[0, 1], [8, 1]], ("row 2", "column 1", "outside")),
    ([[0, 1.5]], ("row 1", "not an integer")),
    ([[0, 1], [1, 1], [np.nan, 2]], ("row 3", "not finite")),
])
def test_bad_tokens_name_the_first_bad_row(bad, words):
    fm = DiscreteFlowMatcher(vocab_size=8, hidden=(4,))
    with pytest.raises(FmnumpyError) as e:
        fm.fit(np.array(bad), steps=1)
    for w in words:
        assert w in str(e.value)


def test_bad_settings_and_files(tmp_path):
    with pytest.raises(FmnumpyError, match="unknown source"):
        DiscreteFlowMatcher(source="gaussian")
    with pytest.raises(FmnumpyError, match="vocab_size"):
        DiscreteFlowMatcher(vocab_size=1)
    with pytest.raises(FmnumpyError, match="unknown token dataset"):
        DiscreteFlowMatcher().fit("2spirals", steps=1)
    f = tmp_path / "t.csv"
    f.write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(FmnumpyError, match="line 3"):
        DiscreteFlowMatcher(vocab_size=8).fit(f, steps=1)
    f.write_text("a,b\n1,2\n3,9\n")
    with pytest.raises(FmnumpyError, match="line 3 column 2"):
        DiscreteFlowMatcher(vocab_size=8).fit(f, steps=1)
    with pytest.raises(FmnumpyError, match="not trained"):
        DiscreteFlowMatcher().sample(3)


def test_checkerboard_pmf_is_uniform_on_half_the_grid():
    p = checkerboard_pmf(128)
    assert p.shape == (128, 128) and abs(p.sum() - 1) < 1e-12
    assert np.count_nonzero(p) == 128 * 128 // 2
    assert TokenData("discrete_checkerboard", 128).entropy() == pytest.approx(np.log(8192))
    assert p[0, 0] > 0 and p[0, 32] == 0 and p[32, 32] > 0


# ---- the command line ------------------------------------------------------------------------

def test_cli_trains_samples_and_evaluates_a_discrete_model(tmp_path, capsys):
    out = tmp_path / "r"
    assert run(["train", "--discrete", "--vocab-size", 16, "--steps", 60, "--batch-size", 64,
                "--hidden", "16", "--no-progress", "--out", out]) == 0
    for f in ("checkpoint.npz", "samples.png", "flow.gif", "loss.png", "elbo.png",
              "samples.npy", "metrics.json"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 60 and m["tv"] > 0 and m["elbo"] < 0
    x = np.load(out / "samples.npy")
    assert x.dtype == np.int64 and x.shape == (20000, 2) and 0 <= x.min() and x.max() < 16
    assert run(["sample", "--checkpoint", out / "checkpoint.npz", "-n", 7,
                "--out", tmp_path / "s.npy"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)
    capsys.readouterr()
    assert run(["evaluate", "--checkpoint", out / "checkpoint.npz", "-n", 500]) == 0
    assert "tv_ratio" in capsys.readouterr().out
    assert run(["density", "--checkpoint", out / "checkpoint.npz", "--out",
                tmp_path / "d.png"]) == 2
    assert_one_line_error(capsys, 2, "discrete")
    assert run(["train", "--discrete", "--resume", "--steps", 70, "--no-progress",
                "--no-plots", "--out", out]) == 0                   # 70 in total
    assert DiscreteFlowMatcher.load(out / "checkpoint.npz").state_.step == 70
    capsys.readouterr()
    assert run(["train", "--discrete", "--resume", "--steps", 50, "--no-progress",
                "--no-plots", "--out", out]) == 2
    assert_one_line_error(capsys, 2, "taken 70 steps", "--steps of 70 or more")
    # another family's options are refused, never ignored
    assert run(["sample", "--checkpoint", out / "checkpoint.npz", "--out", tmp_path / "s.npy",
                "--log-prob", tmp_path / "l.npy"]) == 2
    assert_one_line_error(capsys, 2, "--log-prob", "flow matching on R^D", "discrete")


@pytest.mark.parametrize("argv,words", [
    (["--path", "cosine"], ("--path", "flow matching on R^D", "does not take it")),
    (["--device", "cuda"], ("--device", "flow matching on R^D")),
    (["--x-freqs", "2"], ("--x-freqs", "on a manifold", "does not take it")),
    (["--source", "gaussian"], ("unknown source",)),
    (["--data", "BAD"], ("line 3", "column 2", "outside")),
    (["--vocab-size", "1"], ("vocab_size",)),
])
def test_cli_bad_discrete_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    bad = tmp_path / "tok.csv"
    bad.write_text("x,y\n1,2\n3,-4\n")
    argv = [str(bad) if a == "BAD" else a for a in argv]
    code = run(["train", "--discrete", "--steps", 1, "--no-progress", "--out",
                tmp_path / "r"] + argv)
    assert code == 2
    assert_one_line_error(capsys, code, *words)


def test_continuous_loaders_refuse_a_discrete_checkpoint(tmp_path):
    from fmnumpy import FlowMatcher
    fm = DiscreteFlowMatcher(vocab_size=8, hidden=(4,)).fit("discrete_checkerboard", steps=2,
                                                            batch_size=4)
    fm.save(tmp_path / "d.npz")
    with pytest.raises(FmnumpyError, match=r"DiscreteFlowMatcher.*fmnumpy.load"):
        FlowMatcher.load(tmp_path / "d.npz")
    FlowMatcher(hidden=(4,)).fit("2spirals", steps=2, batch_size=4).save(tmp_path / "c.npz")
    with pytest.raises(FmnumpyError, match=r"\(FlowMatcher\).*fmnumpy.load"):
        DiscreteFlowMatcher.load(tmp_path / "c.npz")
    assert isinstance(fmnumpy.load(tmp_path / "d.npz"), DiscreteFlowMatcher)
    assert isinstance(fmnumpy.load(tmp_path / "c.npz"), FlowMatcher)
