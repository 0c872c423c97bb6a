"""Flow maps (fmnumpy/euclidean/flowmap.py, docs/flow_maps.md): the second time's input
block, the tangent along (v, 1, 0) and both objectives' loss gradients against float64
central differences, the jumps against a loop written here, the times of the map rows,
training, checkpoints and the one-line refusals."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from reference import (EPS, SETTINGS, assert_grad_close, central_diff, features_ref, kinds,
                       mlp_ref, problem)

from fmnumpy import FlowMatcher
from fmnumpy.errors import FmnumpyError
from fmnumpy.euclidean import flowmap
from fmnumpy.nn import mlp

cases = dict(problem, x_freqs=st.integers(0, 2))


def gap_ref(h, n_freq):
    """[h, sin(pi 2^k h), 1 - cos(pi 2^k h)] for k < n_freq, written from the docstring."""
    cols = [h[:, None]]
    for k in range(n_freq):
        w = math.pi * 2.0 ** k
        cols += [np.sin(w * h)[:, None], 1.0 - np.cos(w * h)[:, None]]
    return np.concatenate(cols, axis=1)


def net_of(seed, hidden, D, n_freq, x_freqs, kind):
    spec = mlp.MLPSpec(D, hidden, "silu", n_freq, x_freqs=x_freqs, x_dirs="diagonals",
                       flow_map=True)
    rng = np.random.default_rng(seed)
    theta = mlp.init_params(spec.sizes, rng, np.float64) * 1.5
    return spec, (spec.sizes, kind, spec.feats), theta, rng


def u_ref(theta, spec, kind, x, s, h):
    """u(x, s, s + h) in float64 NumPy: the reference features, the gap block, the MLP."""
    X = np.concatenate([features_ref(x, s, spec.n_freq, spec.x_freqs), gap_ref(h, spec.n_freq)],
                       axis=1)
    return mlp_ref(theta, spec.sizes, kind, X)[0]


def buffers(spec, B):
    ws = mlp.Workspace(spec.sizes, B, np.float64)
    H = int(spec.sizes[1:].max())
    return ws, np.zeros((B, int(spec.sizes[0]))), np.zeros(B * H), np.zeros(B * H)


@SETTINGS
@given(kind=kinds, **cases)
def test_map_features_and_forward_match_the_reference(seed, hidden, D, B, n_freq, x_freqs,
                                                      kind):
    spec, net, theta, rng = net_of(seed, hidden, D, n_freq, x_freqs, kind)
    x, s, h = rng.standard_normal((B, D)), rng.random(B), rng.random(B)
    ws = mlp.Workspace(spec.sizes, B, np.float64)
    u = flowmap.map_forward(theta, net, x, s, h, ws.X, ws.A, ws.Z)
    assert np.allclose(u, u_ref(theta, spec, kind, x, s, h), atol=1e-12)


@SETTINGS
@given(kind=kinds, **cases)
def test_the_gap_block_vanishes_on_the_diagonal(seed, hidden, D, B, n_freq, x_freqs, kind):
    """u(x, t, t) is the network with the gap block zero: what the ODE solvers evaluate."""
    spec, net, theta, rng = net_of(seed, hidden, D, n_freq, x_freqs, kind)
    x, t = rng.standard_normal((B, D)), rng.random(B)
    ws = mlp.Workspace(spec.sizes, B, np.float64)
    u = flowmap.map_forward(theta, net, x, t, np.zeros(B), ws.X, ws.A, ws.Z).copy()
    fresh = mlp.Workspace(spec.sizes, B, np.float64)
    v = mlp.velocity(theta, spec.sizes, kind, spec.feats, x, t, fresh.X, fresh.A, fresh.Z)
    assert np.array_equal(u, v)


@SETTINGS
@given(kind=kinds, **cases)
def test_the_tangent_along_v_1_0_matches_central_differences(seed, hidden, D, B, n_freq,
                                                            x_freqs, kind):
    """du/dtau of u(x + tau v, s + tau, t) (t fixed, so h = t - s moves by -tau)."""
    spec, net, theta, rng = net_of(seed, hidden, D, n_freq, x_freqs, kind)
    x, v = rng.standard_normal((B, D)), rng.standard_normal((B, D))
    s = rng.random(B) * 0.5
    h = 0.05 + rng.random(B) * 0.4
    ws, U, T1, T2 = buffers(spec, B)
    u, du = flowmap.map_forward_jvp(theta, net, x, s, h, v, ws.X, ws.A, U, T1, T2)
    assert np.allclose(u, u_ref(theta, spec, kind, x, s, h), atol=1e-12)
    f = lambda e: u_ref(theta, spec, kind, x + e * v, s + e, h - e)      # noqa: E731
    fd = (f(EPS) - f(-EPS)) / (2 * EPS)
    assert_grad_close("du/ds along (v, 1, 0)", du, fd, rtol=1e-6)


def loss_problem(seed, hidden, D, B, n_freq, x_freqs, kind, code, n_map):
    spec, net, theta, rng = net_of(seed, hidden, D, n_freq, x_freqs, kind)
    x0, x1 = rng.standard_normal((B, D)), 2.0 * rng.standard_normal((B, D))
    s, h, g = rng.random(B), np.zeros(B), np.zeros(B)
    lo = B - n_map
    if code == flowmap.MEANFLOW:
        h[lo:] = rng.random(n_map) * (1.0 - s[lo:])
    else:
        d = 0.5 ** rng.integers(1, 4, size=n_map)
        s[lo:], h[lo:] = rng.random(n_map) * (1.0 - 2 * d), 2 * d
        g[lo:] = np.where(rng.random(n_map) < 0.5, d, 0.0)
    ema = theta + 0.1 * rng.standard_normal(theta.shape)
    return spec, net, theta, ema, (x0, x1, s, h, g)


def target_ref(theta, ema, spec, kind, code, batch, n_map, teacher=False):
    """The rows' targets from their definitions, with NumPy's network: x1 - x0 on the
    plain rows; MeanFlow v + h du/ds by central differences, v = x1 - x0 or (teacher) the
    EMA network's u'(x, s, s); the shortcut's two teacher jumps."""
    x0, x1, s, h, g = batch
    xs = (1 - s[:, None]) * x0 + s[:, None] * x1
    vs = x1 - x0
    tgt = vs.copy()
    lo = x0.shape[0] - n_map
    xm, sm, hm, gm, vm = xs[lo:], s[lo:], h[lo:], g[lo:], vs[lo:]
    if code == flowmap.MEANFLOW:
        if teacher:
            vm = u_ref(ema, spec, kind, xm, sm, np.zeros_like(sm))
        f = lambda e: u_ref(theta, spec, kind, xm + e * vm, sm + e, hm - e)   # noqa: E731
        tgt[lo:] = vm + hm[:, None] * (f(EPS) - f(-EPS)) / (2 * EPS)
    else:
        d = hm / 2
        u1 = u_ref(ema, spec, kind, xm, sm, gm)
        u2 = u_ref(ema, spec, kind, xm + d[:, None] * u1, sm + d, gm)
        tgt[lo:] = (u1 + u2) / 2
    return xs, tgt


@SETTINGS
@given(kind=kinds, code=st.sampled_from([flowmap.MEANFLOW, flowmap.SHORTCUT]),
       power=st.sampled_from([0.0, 0.5, 1.0]), share=st.integers(0, 5), teacher=st.booleans(),
       **cases)
def test_map_loss_and_gradient_match_central_differences(seed, hidden, D, B, n_freq, x_freqs,
                                                         kind, code, power, share, teacher):
    """The loss against its definition with targets made here, and dL/dtheta against
    central differences of that loss with the target and the weight held fixed."""
    n_map = min(B, share)
    spec, net, theta, ema, batch = loss_problem(seed, hidden, D, B, n_freq, x_freqs, kind,
                                                code, n_map)
    work = flowmap.MapWork(spec.sizes, B, np.float64).buffers()
    dtheta = np.full_like(theta, 7.0)                      # stale: must be overwritten
    obj = (np.int64(code), np.int64(n_map), power, flowmap.WEIGHT_EPS, teacher)
    L = flowmap.map_loss_and_grad(theta, ema, dtheta, net, obj, batch, work)
    xs, tgt = target_ref(theta, ema, spec, kind, code, batch, n_map, teacher)
    s, h = batch[2], batch[3]
    r0 = np.sum((u_ref(theta, spec, kind, xs, s, h) - tgt) ** 2, axis=1)
    w = (r0 + flowmap.WEIGHT_EPS) ** (-power)
    assert abs(L - np.sum(w * r0) / (B * D)) <= 1e-7 * max(1.0, abs(L))

    def fixed():
        return np.sum(w * np.sum((u_ref(theta, spec, kind, xs, s, h) - tgt) ** 2, axis=1)) \
            / (B * D)
    assert_grad_close("dL/dtheta", dtheta, central_diff(fixed, theta), rtol=1e-6)


def test_the_jumps_are_the_map_applied_k_times():
    spec, net, theta, rng = net_of(3, (8, 8), 2, 1, 1, mlp.activation_code("silu"))
    x0 = rng.standard_normal((7, 2))
    for K in (1, 2, 5):
        x, traj = flowmap.jump(theta, spec, x0, K, record=True)
        y = x0.astype(np.float32).astype(np.float64)
        for k in range(K):
            s = np.full(7, k / K)
            y = y + u_ref(theta, spec, spec.kind, y, s, np.full(7, 1.0 / K)) / K
            assert np.allclose(traj[k + 1], y, atol=1e-5)
        assert traj.shape == (K + 1, 7, 2) and np.array_equal(traj[-1], x)
        assert np.allclose(x, y, atol=1e-5)
    # chunks of rows give the same jumps
    assert np.array_equal(flowmap.jump(theta, spec, x0, 3, chunk=2), flowmap.jump(theta, spec, x0, 3))


def test_the_frames_of_the_jumps_run_along_each_jump():
    traj = np.random.default_rng(0).standard_normal((3, 4, 2))        # K = 2 jumps
    f = flowmap.jump_frames(traj, per_jump=5)
    assert f.shape == (11, 4, 2)
    assert np.array_equal(f[0], traj[0]) and np.array_equal(f[5], traj[1])
    assert np.array_equal(f[10], traj[2])
    assert np.allclose(f[7], traj[1] + 0.4 * (traj[2] - traj[1]))


@pytest.mark.parametrize("code", [flowmap.MEANFLOW, flowmap.SHORTCUT])
def test_the_times_of_the_map_rows(code):
    C, B, n_map = 40, 16, 4
    t = np.random.default_rng(0).random((C, B)).astype(np.float32)
    times = flowmap.MapTimes(code, n_map, 2.0, 0, C)
    s, h, g = times.times(0, C, t)
    assert np.array_equal(s[:, :B - n_map], t[:, :B - n_map])       # plain rows untouched
    assert not h[:, :B - n_map].any() and not g[:, :B - n_map].any()
    sm, hm, gm = s[:, B - n_map:], h[:, B - n_map:], g[:, B - n_map:]
    assert (sm >= 0).all() and (hm > 0).all() and (sm + hm <= 1 + 1e-6).all()
    if code == flowmap.SHORTCUT:
        levels = -np.log2(hm)
        assert np.allclose(levels, np.round(levels)) and levels.max() <= flowmap.SHORTCUT_LEVELS - 1
        assert np.allclose(np.mod(sm / (hm / 2), 1.0), 0.0, atol=1e-4)   # on the grid of d
        smallest = np.isclose(hm, 2.0 ** (1 - flowmap.SHORTCUT_LEVELS))
        assert np.array_equal(gm == 0, smallest) and np.allclose(gm[~smallest], hm[~smallest] / 2)
    else:
        assert not np.isin(sm, t).any()                    # the map's own draws
        assert not gm.any()
    again = flowmap.MapTimes(code, n_map, 2.0, 0, C).times(10, 5, t)
    assert all(np.array_equal(a, b[10:15]) for a, b in zip(again, (s, h, g)))


@pytest.fixture(scope="module")
def maps():
    out = {}
    for obj in ("meanflow", "shortcut"):
        fm = FlowMatcher(objective=obj, hidden=(32, 32), seed=0)
        out[obj] = fm.fit("8gaussians", steps=1500, batch_size=128)
    return out


@pytest.mark.parametrize("obj", ["meanflow", "shortcut"])
def test_a_short_run_learns_a_map_whose_jumps_land_near_the_data(maps, obj):
    from fmnumpy.metrics import w2
    from fmnumpy.euclidean import datasets
    fm = maps[obj]
    fresh = datasets.make_sampler("8gaussians")(1000, np.random.default_rng(9))
    start = w2(np.random.default_rng(3).standard_normal((1000, 2)), fresh)   # the source's
    for K in (1, 2):
        x = fm.sample(1000, steps=K, seed=3)
        assert w2(x, fresh) < 0.6 * start, (K, w2(x, fresh), start)
    assert np.array_equal(fm.sample(100, seed=4), fm.sample(100, method="jump", steps=2, seed=4))
    ode = fm.sample(1000, method="rk4", steps=20, seed=3)            # on the diagonal
    assert w2(ode, fresh) < 0.6 * start


@pytest.mark.parametrize("obj", ["meanflow", "shortcut"])
def test_the_ode_solvers_run_a_map_on_its_diagonal(maps, obj):
    """Euler on a map is Euler on u(x, t, t) (FlowMatcher.velocity), whatever the solver's
    buffers held before."""
    fm = maps[obj]
    x0 = np.random.default_rng(5).standard_normal((300, 2)).astype(np.float32)
    x = x0.copy()
    for k in range(4):
        x = x + 0.25 * fm.velocity(x, k / 4)
    assert np.allclose(fm.sample(x0=x0, method="euler", steps=4), x, atol=1e-5)
    assert np.allclose(fm.transport(x0, method="euler", steps=4), x, atol=1e-5)


def test_training_a_map_is_deterministic_and_resumes_bit_for_bit():
    kw = dict(objective="meanflow", hidden=(16, 16), seed=2)
    a = FlowMatcher(**kw).fit("moons", steps=120, batch_size=32)
    b = FlowMatcher(**kw).fit("moons", steps=120, batch_size=32, until=50)
    b.fit("moons", steps=120, batch_size=32, warm_start=True)
    assert np.array_equal(a.state_.buf, b.state_.buf) and a.losses_ == b.losses_
    c = FlowMatcher(**dict(kw, objective="shortcut")).fit("moons", steps=120, batch_size=32)
    assert not np.array_equal(a.theta_, c.theta_)


def test_a_map_trains_from_any_source_with_a_coupling(tmp_path):
    """x0 from another distribution, paired by exact OT: the jumps start from that source,
    and the checkpoint keeps it."""
    fm = FlowMatcher(objective="meanflow", map_teacher=True, hidden=(16,), coupling="ot",
                     seed=1).fit("moons", steps=30, batch_size=16, source="8gaussians")
    x0 = fm.draw_source(50, np.random.default_rng(2))
    assert np.abs(np.linalg.norm(x0, axis=1) - 2.83).max() < 1.5           # the 8 gaussians
    assert np.array_equal(fm.sample(50, steps=1, seed=2), fm.sample(x0=x0, steps=1))
    fm.save(tmp_path / "s.npz")
    assert FlowMatcher.load(tmp_path / "s.npz").source_.name == "8gaussians"


def test_a_map_trains_30000_steps_by_default_and_the_velocity_20000():
    for obj, total in (("meanflow", 30000), ("fm", 20000)):
        fm = FlowMatcher(objective=obj, hidden=(4,)).fit("moons", batch_size=8, until=2)
        assert fm.step_ == 2 and fm.total_steps_ == total


def test_a_map_round_trips_through_a_checkpoint(maps, tmp_path):
    fm = maps["shortcut"]
    fm.save(tmp_path / "m.npz")
    back = FlowMatcher.load(tmp_path / "m.npz")
    assert back.objective == "shortcut" and back.spec_.flow_map
    assert np.array_equal(back.sample(50, steps=1, seed=2), fm.sample(50, steps=1, seed=2))
    assert np.array_equal(back.sample(50, method="euler", steps=4), fm.sample(50, method="euler",
                                                                              steps=4))


def test_evaluate_a_map_counts_one_evaluation_per_jump(maps):
    out = maps["meanflow"].evaluate(n=200, steps=2)
    assert out["nfe"] == 2 and out["w2"] > 0


@pytest.mark.parametrize("kwargs,words", [
    (dict(steps=0), "steps"), (dict(steps=1.5), "integer"), (dict(steps=True), "integer"),
    (dict(guidance=2.0), "unconditional"), (dict(labels=1), "unconditional"),
    (dict(return_logprob=True), "log-probabilities"),
])
def test_bad_jump_sampling_is_refused_in_one_line(maps, kwargs, words):
    with pytest.raises(FmnumpyError, match=words) as e:
        maps["meanflow"].sample(10, **kwargs)
    assert "\n" not in str(e.value)


def test_jumps_of_a_plain_model_and_bad_objectives_are_refused():
    fm = FlowMatcher(hidden=(8,)).fit("moons", steps=5, batch_size=8)
    with pytest.raises(FmnumpyError, match="objective 'fm'"):
        fm.sample(10, method="jump", steps=1)
    bad = [dict(objective="meanflw"), dict(objective="meanflow", path="cosine"),
           dict(objective="shortcut", sigma_min=0.01), dict(objective="meanflow", map_fraction=0.0), dict(objective="meanflow",
                                                              adaptive_power=-1)]
    for kw in bad:
        with pytest.raises(FmnumpyError) as e:
            FlowMatcher(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(FmnumpyError, match="trains on the CPU"):
        FlowMatcher(objective="meanflow", device="cuda").fit("moons", steps=5)
    with pytest.raises(FmnumpyError, match="labels are available with objective 'fm'"):
        FlowMatcher(objective="meanflow").fit("8gaussians", steps=5, labels=True)


# ---- the command line ------------------------------------------------------------------

def test_train_a_map_and_sample_it_in_one_jump_from_the_command_line(tmp_path, capsys):
    from reference import TINY, run
    out = tmp_path / "run"
    assert run(["train", "--objective", "shortcut", "--steps", 40, "--out", out] + TINY) == 0
    assert run(["sample", "--checkpoint", out / "checkpoint.npz", "--steps", 1, "-n", 64,
                "--out", tmp_path / "x.npy"]) == 0
    fm = FlowMatcher.load(out / "checkpoint.npz")
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (64, 2) and np.array_equal(x, fm.sample(64, steps=1, seed=1))
    assert run(["animate", "--checkpoint", out / "checkpoint.npz", "-n", 32, "--frames", 8,
                "--out", tmp_path / "a.gif"]) == 0
    assert "wrote 9 frames" in capsys.readouterr().err            # 2 jumps, 4 frames each
    assert run(["train", "--objective", "meanflow", "--steps", 20, "--out", tmp_path / "p",
                "--hidden", "8,8", "--batch-size", 16, "--no-progress", "--warmup", 5]) == 0
    assert (tmp_path / "p" / "jumps.png").exists() and (tmp_path / "p" / "flow.gif").exists()


@pytest.mark.parametrize("argv,words", [
    (["--objective", "meanflow", "--conditional"], "labels are available with objective"),
    (["--objective", "shortcut", "--path", "cosine"], "straight path"),
    (["--objective", "meanflow", "--manifold", "sphere"], "--objective"),
    (["--map-fraction", "1.5", "--objective", "meanflow"], "map_fraction"),
])
def test_bad_map_training_options_are_one_line(tmp_path, capsys, argv, words):
    from reference import TINY, assert_one_line_error, run
    code = run(["train", "--steps", 5, "--out", tmp_path / "r"] + TINY + argv)
    assert_one_line_error(capsys, code, words)


def test_jumps_of_a_plain_checkpoint_and_zero_jumps_are_one_line(tmp_path, capsys):
    from reference import TINY, assert_one_line_error, run
    assert run(["train", "--steps", 5, "--out", tmp_path / "r"] + TINY) == 0
    assert run(["train", "--objective", "meanflow", "--steps", 5, "--out", tmp_path / "m"]
               + TINY) == 0
    capsys.readouterr()
    code = run(["sample", "--checkpoint", tmp_path / "r" / "checkpoint.npz", "--method", "jump",
                "--out", tmp_path / "x.npy"])
    assert_one_line_error(capsys, code, "objective 'fm'")
    code = run(["sample", "--checkpoint", tmp_path / "m" / "checkpoint.npz", "--steps", 0,
                "--out", tmp_path / "x.npy"])
    assert_one_line_error(capsys, code, "steps")
