"""Transport between two distributions (``fit(source=...)``), the constant-sigma path,
the path energy and ``FlowMatcher.evaluate``: the source feeds x0 of every batch and
every sample, checkpoints keep it, transport runs both ways, NPE separates exact OT
from independent pairs, and bad input ends in one line.

Dimension letters: B batch, D data dimension, N points."""
import numpy as np
import pytest

from fmnumpy import FlowMatcher, FmnumpyError, config, metrics
from fmnumpy.euclidean import datasets
from fmnumpy.euclidean.stream import TRAIN_STREAM, BatchStream

from reference import TINY, assert_one_line_error, run


def small(**kw):
    args = dict(hidden=(32, 32), seed=0, warmup=20, lr=3e-3, threads=1)
    args.update(kw)
    return FlowMatcher(**args)


@pytest.fixture(scope="module")
def moons_from_gaussians():
    return small(sigma=0.05).fit("moons", steps=300, batch_size=64, source="8gaussians")


# ---- the source ------------------------------------------------------------------------------

def test_the_stream_draws_x0_from_the_source_after_x1():
    src = datasets.as_data("8gaussians")
    s = BatchStream(datasets.make_sampler("moons"), 2, 16, 3, np.float32, source=src.draw)
    x0, x1, t = s.batch_at(config.DATA_CHUNK_STEPS + 5)
    rng = np.random.default_rng([3, TRAIN_STREAM, 1])
    C = config.DATA_CHUNK_STEPS
    want_x1 = datasets.sample("moons", C * 16, rng).reshape(C, 16, 2)[5]
    want_x0 = src.draw(C * 16, rng).reshape(C, 16, 2)[5]
    np.testing.assert_array_equal(x1, want_x1)
    np.testing.assert_array_equal(x0, want_x0)
    plain = BatchStream(datasets.make_sampler("moons"), 2, 16, 3, np.float32)
    np.testing.assert_array_equal(plain.batch_at(C + 5)[1], x1)     # the same data either way


def test_samples_and_their_trajectories_start_from_the_source(moons_from_gaussians):
    fm = moons_from_gaussians
    _, traj = fm.sample(50, steps=4, seed=7, record=4)
    np.testing.assert_array_equal(traj[0], fm.draw_source(50, np.random.default_rng(7))
                                  .astype(np.float32))
    centres = datasets.EIGHT_CENTRES
    d = np.linalg.norm(traj[0][:, None] - centres[None], axis=2).min(1)
    assert d.max() < 3.0                        # the 8gaussians modes, not N(0, I)


def test_checkpoints_keep_the_source_by_name_or_as_an_array(tmp_path, moons_from_gaussians):
    fm = moons_from_gaussians
    fm.save(tmp_path / "a.npz")
    back = FlowMatcher.load(tmp_path / "a.npz")
    assert back.source_.name == "8gaussians" and back.sigma == 0.05
    np.testing.assert_array_equal(back.sample(20, steps=3), fm.sample(20, steps=3))
    rows = np.random.default_rng(1).normal(size=(40, 2)) + 5.0
    path = tmp_path / "src.csv"
    np.savetxt(path, rows, delimiter=",")
    g = small().fit("moons", steps=3, batch_size=8, source=str(path))
    g.save(tmp_path / "b.npz")
    path.unlink()                               # the checkpoint needs the file no more
    h = FlowMatcher.load(tmp_path / "b.npz")
    assert h.source_.name == str(path)
    np.testing.assert_allclose(h.source_.array, rows.astype(np.float32))
    np.testing.assert_array_equal(h.sample(9, steps=2), g.sample(9, steps=2))


def test_transport_runs_both_ways(moons_from_gaussians):
    fm = moons_from_gaussians
    x = fm.draw_source(30, np.random.default_rng(2))
    y = fm.transport(x, steps=100)
    np.testing.assert_allclose(fm.transport(y, reverse=True, steps=100), x, atol=2e-3)
    np.testing.assert_array_equal(y, fm.sample(x0=x, steps=100))


def test_resume_from_a_checkpoint_with_a_source_is_bit_exact(tmp_path):
    full = small().fit("moons", steps=80, batch_size=16, source="8gaussians")
    part = small().fit("moons", steps=80, batch_size=16, source="8gaussians", until=70)
    part.save(tmp_path / "p.npz")
    back = FlowMatcher.load(tmp_path / "p.npz").fit("moons", steps=80, batch_size=16,
                                                     warm_start=True)
    np.testing.assert_array_equal(back.theta_, full.theta_)
    assert back.losses_ == full.losses_


# ---- path energy and evaluate ------------------------------------------------------------

def test_path_energy_of_known_fields():
    t = np.linspace(0, 1, 11)
    c = np.array([3.0, -4.0])
    v = np.broadcast_to(c, (11, 5, 2))
    assert metrics.path_energy(v, t) == pytest.approx(25.0, rel=1e-14)
    ramp = t[:, None, None] * np.ones((11, 5, 1))            # |v| = t: int t^2 = 1/3
    assert metrics.path_energy(ramp, t) == pytest.approx(1 / 3, abs=2e-3)
    assert metrics.normalized_path_energy(2.0, 1.0) == pytest.approx(1.0)
    assert metrics.normalized_path_energy(1.0, 1.0) == 0.0
    with pytest.raises(FmnumpyError):
        metrics.normalized_path_energy(1.0, 0.0)


def test_w1_is_at_most_w2_and_exact_on_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) * 2
    assert metrics.w1(a, b) <= metrics.w2(a, b) + 1e-12
    assert metrics.w1(a, a + [3.0, 4.0]) == pytest.approx(5.0, rel=1e-12)


def test_evaluate_reports_every_metric(moons_from_gaussians):
    m = moons_from_gaussians.evaluate(n=200, steps=10)
    for key in ("w1", "w2", "mmd", "energy", "npe", "straightness", "nfe"):
        assert np.isfinite(m[key]), key
    assert m["nfe"] == 40 and m["w1"] <= m["w2"] and m["npe"] >= 0 and m["n"] == 200
    assert m == moons_from_gaussians.evaluate(n=200, steps=10)          # seeded


def test_exact_ot_has_a_far_smaller_path_energy_than_independent_pairs():
    npe = {}
    for coupling in ("independent", "ot"):
        fm = small(coupling=coupling, hidden=(64, 64)).fit("moons", steps=1500, batch_size=128,
                                                           source="8gaussians")
        npe[coupling] = fm.evaluate(n=400, steps=20)["npe"]
    print(npe)
    assert npe["ot"] < 0.3 * npe["independent"]


# ---- bad input ---------------------------------------------------------------------------

def test_bad_sources_and_sigmas():
    with pytest.raises(FmnumpyError, match="source has D=8 and the data D=2"):
        small().fit("moons", steps=2, batch_size=4, source="gmm8d")
    with pytest.raises(FmnumpyError, match="unknown dataset 'nope'"):
        small().fit("moons", steps=2, batch_size=4, source="nope")
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(FmnumpyError, match="sigma"):
            FlowMatcher(sigma=bad)
    with pytest.raises(FmnumpyError, match="sigma_min"):
        FlowMatcher(sigma=0.1, sigma_min=0.01)
    with pytest.raises(FmnumpyError, match="cosine"):
        FlowMatcher(sigma=0.1, path="cosine")
    from fmnumpy.euclidean.cuda import gpu_available
    if not gpu_available():          # a source is a GPU feature: only the missing GPU stops it
        with pytest.raises(FmnumpyError, match="needs an NVIDIA GPU"):
            FlowMatcher(device="cuda").fit("moons", steps=2, batch_size=4, source="8gaussians")


def test_log_probabilities_need_the_gaussian_source(moons_from_gaussians):
    fm = moons_from_gaussians
    for call in (lambda: fm.log_prob(np.zeros((2, 2))), lambda: fm.density_grid(n_grid=3),
                 lambda: fm.sample(4, return_logprob=True)):
        with pytest.raises(FmnumpyError, match="N\\(0, I\\) source.*8gaussians"):
            call()
    with pytest.raises(FmnumpyError, match="fixed-step"):
        fm.evaluate(n=10, method="dopri5")


# ---- the command line ------------------------------------------------------------------------

def test_cli_trains_from_a_source_and_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    code = run(["train", "--dataset", "moons", "--source", "8gaussians", "--sigma", 0.05,
                "--steps", 30, "--out", out, *TINY])
    assert code == 0, capsys.readouterr().err
    fm = FlowMatcher.load(out / "checkpoint.npz")
    assert fm.source_.name == "8gaussians" and fm.sigma == 0.05
    capsys.readouterr()
    assert run(["evaluate", "--checkpoint", out / "checkpoint.npz", "-n", 50, "--steps", 4,
                "--json", tmp_path / "m.json"]) == 0
    printed = capsys.readouterr().out
    for key in ("w1", "w2", "mmd", "energy", "npe", "straightness", "nfe"):
        assert key in printed
    code = run(["train", "--dataset", "moons", "--source", "2spirals", "--steps", 40,
                "--out", out, "--resume", *TINY])
    assert_one_line_error(capsys, code, "8gaussians", "--source 2spirals")


def test_cli_source_of_another_dimension_is_one_line(tmp_path, capsys):
    code = run(["train", "--dataset", "moons", "--source", "gmm8d", "--steps", 3,
                "--out", tmp_path, *TINY])
    assert_one_line_error(capsys, code, "D=8", "D=2")


def test_warm_start_refuses_another_source():
    fm = small().fit("moons", steps=4, batch_size=8, source="8gaussians")
    for other in ("2spirals", None):
        g = small().fit("moons", steps=4, batch_size=8, source=other)
        with pytest.raises(FmnumpyError, match="source"):
            g.fit("moons", steps=8, batch_size=8, warm_start=True,
                  source="8gaussians" if other is None else "moons")
    with pytest.raises(FmnumpyError, match="'8gaussians'"):
        fm.fit("moons", steps=8, batch_size=8, warm_start=True, source="2spirals")
    fm.fit("moons", steps=8, batch_size=8, warm_start=True, source="8gaussians")   # the same
    assert fm.step_ == 8 and fm.source_.name == "8gaussians"
