"""Labels and classifier-free guidance: the toy sets' labels, the one-hot with a null
class in the network (its gradient against finite differences in float64), label
dropout, OT pairs within a class, the guided field v_null + w (v_y - v_null), per-class
W2, checkpoints, and every bad label in one line.

Dimension letters: B batch, D data dimension, K classes."""
import numpy as np
from scipy.optimize import linear_sum_assignment
import pytest
from hypothesis import assume, given, strategies as st

from fmnumpy import FlowMatcher, FmnumpyError
from fmnumpy.euclidean import datasets, step
from fmnumpy.nn import mlp
from fmnumpy import config
from fmnumpy.couplings.registry import exact_ot
from fmnumpy.euclidean.paths import STRAIGHT
from fmnumpy.euclidean.integrate import conditioning, mlp_field
from fmnumpy.euclidean.stream import BatchStream

from reference import (NAME, SETTINGS, assert_grad_close, away_from_kinks, central_diff,
                       features_ref, kinds, mlp_ref, TINY, assert_one_line_error, run)


# ---- labels of the toy sets --------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(datasets.CLASSES))
def test_labels_name_the_generating_component(name):
    x, y = datasets.sample(name, 4000, np.random.default_rng(1), labels=True)
    np.testing.assert_array_equal(x, datasets.sample(name, 4000, np.random.default_rng(1)))
    K = datasets.CLASSES[name]
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(K))
    means = np.stack([x[y == k].mean(0) for k in range(K)])
    if name == "8gaussians":                         # each label sits on its own mode
        np.testing.assert_allclose(means, datasets.EIGHT_CENTRES / 1.414, atol=0.1)
    if name in ("rings", "circles"):                 # rings: the radius falls with the label
        r = [np.hypot(*x[y == k].T).mean() for k in range(K)]
        assert all(a > b for a, b in zip(r, r[1:]))
    if name in ("2spirals", "moons"):                # two arms / moons apart
        assert np.linalg.norm(means[0] - means[1]) > 0.5


def test_sets_without_labels_say_so():
    with pytest.raises(FmnumpyError, match="checkerboard.*has no labels"):
        datasets.sample("checkerboard", 10, 0, labels=True)


@pytest.mark.parametrize("labels,words", [
    (np.array([0, 1, 2]), "shape (4,)"), (np.array([0, -1, 1, 2]), "label -1 of row 2"),
    (np.array([0, 1.5, 1, 2]), "label 1.5 of row 2"), (np.array([0, np.nan, 1, 2]), "row 2"),
    (np.array(["a", "b", "c", "d"]), "integers")])
def test_bad_array_labels(labels, words):
    with pytest.raises(FmnumpyError, match=words.replace("(", "\\(").replace(")", "\\)")):
        datasets.Data(np.zeros((4, 2)), labels=labels)


# ---- the network with a label --------------------------------------------------------------

def cond_loss_ref(theta, sizes, kind, n_freq, K, x0, x1, t, y):
    xt = (1.0 - t[:, None]) * x0 + t[:, None] * x1
    X = np.concatenate([features_ref(xt, t, n_freq), np.eye(K + 1)[y]], axis=1)
    v, zs = mlp_ref(theta, sizes, kind, X)
    return np.mean((v - (x1 - x0)) ** 2), zs


@SETTINGS
@given(kind=kinds, seed=st.integers(0, 2**31 - 1), K=st.integers(1, 4), B=st.integers(1, 5),
       n_freq=st.integers(0, 1), hidden=st.lists(st.integers(1, 6), min_size=1, max_size=2))
def test_conditional_gradient_matches_finite_differences(kind, seed, K, B, n_freq, hidden):
    rng = np.random.default_rng(seed)
    D = 2
    sizes = mlp.layer_sizes(D, hidden, n_freq, K)
    theta = mlp.init_params(sizes, rng, np.float64) * 1.5
    x0, x1 = rng.standard_normal((B, D)), rng.standard_normal((B, D)) * 2
    t = rng.random(B)
    y = rng.integers(0, K + 1, size=B)                     # the null class K included
    L_ref, zs = cond_loss_ref(theta, sizes, kind, n_freq, K, x0, x1, t, y)
    assume(away_from_kinks(zs, kind))
    ws = mlp.Workspace(sizes, B, np.float64)
    bufs = tuple(np.zeros((B, D)) for _ in range(3)) + ws.buffers()
    dtheta = np.zeros_like(theta)
    L = step.loss_and_grad(theta, dtheta, (sizes, kind, (n_freq, 0, np.zeros((0, D)))),
                           (STRAIGHT, 0.0),
                           (x0, x1, t, np.zeros((0, D)), y), bufs)
    assert L == pytest.approx(L_ref, rel=1e-12)
    fd = central_diff(lambda: cond_loss_ref(theta, sizes, kind, n_freq, K, x0, x1, t, y)[0],
                      theta)
    assert_grad_close(f"conditional dL/dtheta K={K} {NAME[kind]}", dtheta, fd)


def test_the_guided_field_is_v_null_plus_w_times_the_difference():
    spec = mlp.MLPSpec(2, (7, 5), "tanh", n_freq=1, n_classes=3)
    theta = mlp.init_params(spec.sizes, np.random.default_rng(0), np.float64) * 2
    x = np.random.default_rng(1).standard_normal((6, 2))
    t = np.full(6, 0.3)
    y = np.array([0, 1, 2, 0, 1, 2])

    def field(labels, w):
        y_, w_ = conditioning(spec, 6, labels, w)
        out = np.empty((6, 2))
        mlp_field((theta, spec.sizes, spec.kind, spec.feats, np.zeros((6, spec.sizes[0])),
                   np.zeros(6 * int(spec.sizes[1:].sum())), np.zeros(0), y_, w_,
                   np.zeros((6, 2))), x, t, out)
        return out

    v_y, v_null = field(y, 1.0), field(None, 1.0)
    for w in (0.0, 2.5, -1.0):
        np.testing.assert_allclose(field(y, w), v_null + w * (v_y - v_null), atol=1e-14)
    np.testing.assert_array_equal(field(y, 0.0), v_null)


# ---- the stream: dropout, couplings within a class -------------------------------------------

def test_label_dropout_and_ot_within_classes():
    d = datasets.as_data("8gaussians", True)
    s = BatchStream(d.draw, 2, 64, 0, np.float32, coupling=exact_ot, labeled=d.draw_labeled,
                    label_dropout=0.25, null_class=8)
    plain = BatchStream(d.draw, 2, 64, 0, np.float32, labeled=d.draw_labeled, null_class=8)
    ys, moved = [], []
    for step_ in range(config.DATA_CHUNK_STEPS):
        x0, x1, _ = s.batch_at(step_)
        p0, p1, _ = plain.batch_at(step_)
        y_true = plain.labels_at(step_)
        np.testing.assert_array_equal(x1, p1)             # the same data and classes
        for k in np.unique(y_true):                       # x0 permuted within each class
            rows = y_true == k
            assert sorted(map(tuple, x0[rows])) == sorted(map(tuple, p0[rows]))
            # ... into the optimal pairing of that class (scipy's assignment, an
            # independent solver): a coupling that did nothing would keep p0's cost
            C = ((x0[rows, None, :].astype(np.float64) - x1[None, rows, :]) ** 2).sum(-1)
            r, c = linear_sum_assignment(C)
            cost = np.trace(C)
            assert abs(cost - C[r, c].sum()) <= 1e-6 * max(1.0, cost)
            moved.append(cost < ((p0[rows] - p1[rows]) ** 2).sum() - 1e-6)
        ys.append(s.labels_at(step_))
        kept = ys[-1] != 8
        np.testing.assert_array_equal(ys[-1][kept], y_true[kept])
    dropped = np.mean(np.concatenate(ys) == 8)
    assert 0.2 < dropped < 0.3
    assert np.mean(moved) > 0.5                           # OT lowered most classes' cost


# ---- the model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eight():
    return FlowMatcher(hidden=(64, 64), seed=0, warmup=50, lr=3e-3, threads=1).fit(
        "8gaussians", steps=1500, batch_size=256, labels=True)


def test_guided_samples_land_on_their_class(eight, tmp_path):
    centres = datasets.EIGHT_CENTRES / 1.414
    acc = {}
    for w in (1.0, 3.0):
        hits = []
        for k in range(8):
            x = eight.sample(200, labels=k, guidance=w, steps=40, seed=k)
            hits.append(np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), 1) == k)
        acc[w] = np.mean(hits)
    print(acc)
    assert acc[1.0] > 0.9 and acc[3.0] >= acc[1.0]
    counts = np.bincount(np.argmin(((eight.sample(800, steps=40)[:, None] - centres[None])
                                    ** 2).sum(-1), 1), minlength=8)
    assert counts.min() > 60                               # labels=None: every mode
    eight.save(tmp_path / "c.npz")
    back = FlowMatcher.load(tmp_path / "c.npz")
    assert back.spec_.n_classes == 8 and back.label_dropout == 0.1
    np.testing.assert_array_equal(back.sample(5, labels=2, guidance=2.0),
                                  eight.sample(5, labels=2, guidance=2.0))
    w2s = eight.evaluate(n=400, steps=20)["w2_per_class"]
    assert len(w2s) == 8 and max(w2s) < 1.0


def test_bad_labels_and_guidance_are_one_line(eight):
    for kw, words in ((dict(labels=8), "label 8 is not a class"),
                      (dict(labels=-1), "label -1"), (dict(labels=np.zeros(3)), "shape (5,)"),
                      (dict(labels=1, guidance=float("inf")), "guidance must be finite"),
                      (dict(labels=1, guidance=float("nan")), "guidance must be finite")):
        with pytest.raises(FmnumpyError) as e:
            eight.sample(5, steps=2, **kw)
        assert "\n" not in str(e.value)
        assert words.replace("must be finite", "must be a finite") in str(e.value), e.value
    plain = FlowMatcher(hidden=(4,), seed=0).fit("moons", steps=2, batch_size=4)
    with pytest.raises(FmnumpyError, match="unconditional"):
        plain.sample(3, labels=0)
    with pytest.raises(FmnumpyError, match="label 9 is not a class"):
        eight.log_prob(np.zeros((2, 2)), labels=9)
    with pytest.raises(FmnumpyError, match="trained without conditions"):
        eight.log_prob(np.zeros((2, 2)), condition=[0.0])


# ---- the command line ------------------------------------------------------------------------

def test_cli_conditional_training_sampling_and_label_column(tmp_path, capsys):
    out = tmp_path / "c"
    assert run(["train", "--dataset", "moons", "--conditional", "--steps", 20, "--out", out,
                *[a for a in TINY if a != "--no-plots"]]) == 0
    for picture in ("classes.png", "guidance.png"):
        assert (out / picture).stat().st_size > 1000
    capsys.readouterr()
    assert run(["sample", "--checkpoint", out / "checkpoint.npz", "--out", tmp_path / "s.npy",
                "-n", 7, "--label", 1, "--guidance", 2]) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)
    capsys.readouterr()
    code = run(["sample", "--checkpoint", out / "checkpoint.npz", "--out", tmp_path / "s.npy",
                "--label", 2])
    assert_one_line_error(capsys, code, "label 2 is not a class")
    table = tmp_path / "d.csv"
    x, y = datasets.sample("moons", 60, 0, labels=True)
    np.savetxt(table, np.column_stack([y, x]), delimiter=",")
    assert run(["train", "--data", table, "--label-column", 0, "--steps", 5,
                "--out", tmp_path / "csv", *TINY]) == 0
    assert FlowMatcher.load(tmp_path / "csv" / "checkpoint.npz").spec_.n_classes == 2
    capsys.readouterr()
    code = run(["train", "--data", table, "--label-column", 3, "--steps", 5,
                "--out", tmp_path / "bad", *TINY])
    assert_one_line_error(capsys, code, "--label-column 3 is out of range")
    code = run(["train", "--dataset", "checkerboard", "--conditional", "--steps", 5,
                "--out", tmp_path / "cb", *TINY])
    assert_one_line_error(capsys, code, "checkerboard", "no labels")
