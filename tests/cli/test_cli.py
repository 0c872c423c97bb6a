"""The ``fmnumpy`` command: every user mistake is one line on stderr, a non-zero exit
code and no traceback; the happy paths train, sample and animate a tiny model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fmnumpy import DATASETS

from reference import TINY, assert_one_line_error, run

from reference import REPO  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint written by `fmnumpy train`."""
    out = tmp_path_factory.mktemp("trained")
    code = run(["train", "--steps", 30, "--out", out, "--seed", 5, "--x-freqs", 0, *TINY])
    assert code == 0
    return out


# ---- train: bad input --------------------------------------------------------------------

def test_unknown_dataset_lists_the_valid_names(capsys, tmp_path):
    code = run(["train", "--dataset", "nope", "--out", tmp_path, *TINY])
    line = assert_one_line_error(capsys, code, "nope")
    for name in DATASETS:
        assert name in line


def test_unknown_activation_lists_the_valid_names(capsys, tmp_path):
    code = run(["train", "--activation", "gelu", "--out", tmp_path, "--steps", 5,
                "--no-progress", "--no-plots"])
    assert_one_line_error(capsys, code, "gelu", "relu", "selu", "silu", "tanh")


def test_train_takes_fourier_features_of_x(tmp_path, capsys):
    from fmnumpy import FlowMatcher
    assert run(["train", "--steps", 5, "--x-freqs", 1, "--out", tmp_path, *TINY]) == 0
    assert FlowMatcher.load(tmp_path / "checkpoint.npz").spec_.x_freqs == 1
    capsys.readouterr()
    code = run(["train", "--steps", 5, "--x-freqs", -2, "--out", tmp_path / "bad", *TINY])
    assert_one_line_error(capsys, code, "x_freqs")


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,content,words", [
    ("missing.csv", None, ["no such file"]),
    ("empty.csv", "", ["empty"]),
    ("blank.csv", "\n\n  \n", ["empty"]),
    ("header_only.csv", "x,y\n", ["empty"]),
    ("ragged.csv", "1,2\n3,4\n5\n6,7\n", ["line 3", "1 values"]),
    ("text.csv", "1,2\n3,4\n5,abc\n", ["line 3", "'abc'"]),
    ("nan.csv", "1,2\n3,4\n5,nan\n6,7\nnan,1\n", ["line 3", "NaN"]),
    ("inf.csv", "1,2\n3,inf\n", ["line 2"]),
    ("one_row.csv", "1,2\n", ["at least 2"]),
    ("data.txt", "1,2\n3,4\n", [".npy/.csv"]),
])
def test_bad_csv_data(capsys, tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        write(path, content)
    code = run(["train", "--data", path, "--out", tmp_path / "out", "--steps", 5, *TINY])
    assert_one_line_error(capsys, code, str(path), *words)


@pytest.mark.parametrize("case,words", [
    ("one_d", ["2-D", "(5,)"]),
    ("three_d", ["2-D"]),
    ("nan_row", ["row 4", "NaN"]),
    ("strings", ["real numbers"]),
    ("object", ["npy"]),
    ("not_npy", ["npy"]),
    ("empty_file", ["empty"]),
])
def test_bad_npy_data(capsys, tmp_path, case, words):
    path = tmp_path / f"{case}.npy"
    if case == "one_d":
        np.save(path, np.arange(5.0))
    elif case == "three_d":
        np.save(path, np.zeros((4, 2, 2)))
    elif case == "nan_row":
        x = np.ones((6, 2))
        x[3, 1] = np.nan
        x[5, 0] = np.inf
        np.save(path, x)
    elif case == "strings":
        np.save(path, np.array([["a", "b"], ["c", "d"]]))
    elif case == "object":
        np.save(path, np.array([[1, None], [2, 3]], dtype=object), allow_pickle=True)
    elif case == "not_npy":
        path.write_text("1,2\n3,4\n")
    elif case == "empty_file":
        path.write_bytes(b"")
    code = run(["train", "--data", path, "--out", tmp_path / "out", "--steps", 5, *TINY])
    assert_one_line_error(capsys, code, *words)


@pytest.mark.parametrize("flags,words", [
    (["--steps", 0], ["steps", "positive"]),
    (["--steps", -3], ["steps", "positive"]),
    (["--batch-size", -1], ["batch size", "positive"]),
    (["--batch-size", 0], ["batch size", "positive"]),
    (["--lr", 0], ["learning rate", "positive"]),
    (["--lr", -1], ["learning rate", "positive"]),
    (["--lr", "nan"], ["learning rate"]),
    (["--lr", "inf"], ["learning rate"]),
    (["--time-freqs", -1], ["time_freqs"]),
    (["--sigma-min", 1.5], ["sigma_min"]),
    (["--threads", 1000], ["thread"]),
    (["--threads", -1], ["thread"]),
], ids=lambda v: " ".join(map(str, v)) if str(v[0]).startswith("--") else "")
def test_bad_numbers(capsys, tmp_path, flags, words):
    argv = ["train", "--out", tmp_path, "--steps", 5, *TINY, *flags]
    code = run(argv)
    assert_one_line_error(capsys, code, *words)


@pytest.mark.parametrize("flags,words", [
    (["--path", "vp"], ["'vp'", "straight", "cosine", "sb"]),
    (["--path", "sb", "--sb-sigma", 0], ["sb_sigma", "positive"]),
    (["--path", "sb", "--sb-sigma", "nan"], ["sb_sigma", "positive"]),
    (["--path", "sb", "--sb-sigma", "inf"], ["sb_sigma", "positive"]),
    (["--path", "sb", "--sb-sigma", -1], ["sb_sigma", "positive"]),
    (["--sb-sigma", 0.5], ["--sb-sigma", "--path sb"]),
    (["--path", "cosine", "--sigma-min", 0.1], ["sigma_min", "straight"]),
], ids=lambda v: " ".join(map(str, v)) if str(v[0]).startswith("--") else "")
def test_bad_path_settings(capsys, tmp_path, flags, words):
    code = run(["train", "--out", tmp_path, "--steps", 5, *TINY, *flags])
    assert_one_line_error(capsys, code, *words)


def test_train_on_the_bridge_then_resume_and_evaluate(tmp_path, capsys):
    from fmnumpy import FlowMatcher
    out = tmp_path / "sb"
    code = run(["train", "--path", "sb", "--sb-sigma", 0.5, "--steps", 20, "--out", out,
                *TINY])
    _, err = capsys.readouterr()
    assert code == 0, err
    ckpt = out / "checkpoint.npz"
    fm = FlowMatcher.load(ckpt)
    assert (fm.path, fm.sb_sigma, fm.step_) == ("sb", 0.5, 20)
    code = run(["train", "--resume", "--path", "cosine", "--steps", 30, "--out", out, *TINY])
    assert_one_line_error(capsys, code, "--path sb", "--resume")
    code = run(["train", "--resume", "--steps", 30, "--out", out, *TINY])
    _, err = capsys.readouterr()
    assert code == 0, err
    fm = FlowMatcher.load(ckpt)
    assert (fm.path, fm.sb_sigma, fm.step_) == ("sb", 0.5, 30)
    code = run(["evaluate", "--checkpoint", ckpt, "-n", 40, "--steps", 4])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "w2" in printed


def test_resume_without_checkpoint(capsys, tmp_path):
    code = run(["train", "--resume", "--out", tmp_path, "--steps", 5, *TINY])
    assert_one_line_error(capsys, code, "checkpoint.npz", "does not exist")


def test_out_is_an_existing_file(capsys, tmp_path):
    out = write(tmp_path / "taken", "x")
    code = run(["train", "--out", out, "--steps", 5, *TINY])
    assert_one_line_error(capsys, code, str(out))


# ---- sample / animate: bad input ----------------------------------------------------------

def bad_checkpoint(tmp_path, trained, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        data = (trained / "checkpoint.npz").read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "other_npz":
        np.savez(path, a=np.arange(3))
    elif kind == "npy":
        path = tmp_path / "array.npy"
        np.save(path, np.arange(3.0))
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize("command", ["sample", "animate"])
@pytest.mark.parametrize("kind", ["truncated", "text", "other_npz", "npy", "missing"])
def test_sample_with_unusable_checkpoint(capsys, tmp_path, trained, command, kind):
    path = bad_checkpoint(tmp_path, trained, kind)
    out = tmp_path / ("x.npy" if command == "sample" else "x.gif")
    code = run([command, "--checkpoint", path, "--out", out, "-n", 10, "--steps", 4])
    assert_one_line_error(capsys, code, str(path))
    assert not out.exists()


@pytest.mark.parametrize("argv,words", [
    (["sample", "--out", "{tmp}/x.txt"], [".npy"]),
    (["sample", "--out", "{tmp}/x.npy", "-n", 0], ["number of samples"]),
    (["sample", "--out", "{tmp}/x.npy", "--steps", 0], ["steps"]),
    (["animate", "--out", "{tmp}/x.png"], [".gif"]),
    (["animate", "--out", "{tmp}/x.gif", "--frames", 0], ["frames"]),
])
def test_sample_and_animate_bad_arguments(capsys, tmp_path, trained, argv, words):
    argv = [a.format(tmp=tmp_path) if isinstance(a, str) else a for a in argv]
    code = run([*argv, "--checkpoint", trained / "checkpoint.npz"])
    assert_one_line_error(capsys, code, *words)


def test_unknown_method_is_refused_by_argparse(capsys, trained, tmp_path):
    code = run(["sample", "--checkpoint", trained / "checkpoint.npz", "--out",
                tmp_path / "x.npy", "--method", "dopri8"])
    out, err = capsys.readouterr()
    assert code == 2 and "invalid choice" in err and "rk4" in err and "dopri5" in err
    assert "Traceback" not in err


# ---- happy paths ----------------------------------------------------------------------------

def test_train_writes_checkpoint_samples_and_metrics(trained, capsys):
    files = set(os.listdir(trained))
    assert {"checkpoint.npz", "samples.npy", "metrics.json"} <= files
    assert not [f for f in files if f.startswith(".ckpt-")]
    x = np.load(trained / "samples.npy")
    assert x.shape == (2000, 2) and np.isfinite(x).all()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["w2"] > 0 and np.isfinite(metrics["final_loss"])


@pytest.mark.parametrize("flags", [["--batch-size", 16], []])
def test_train_resume_continues_to_more_steps(trained, tmp_path, capsys, flags):
    """--resume takes the checkpoint's settings; the batch size need not be repeated
    (as --steps need not: it defaults to the checkpoint's total)."""
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes((trained / "checkpoint.npz").read_bytes())
    code = run(["train", "--resume", "--steps", 40, "--out", out, "--no-plots",
                "--no-progress", *flags])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "resuming" in err and "Traceback" not in err
    from fmnumpy import FlowMatcher
    assert FlowMatcher.load(out / "checkpoint.npz").step_ == 40


def test_sample_happy_path(trained, tmp_path, capsys):
    out = tmp_path / "deep" / "x.npy"
    code = run(["sample", "--checkpoint", trained / "checkpoint.npz", "--out", out,
                "-n", 37, "--steps", 8, "--method", "heun", "--seed", 3])
    _, err = capsys.readouterr()
    assert code == 0, err
    x = np.load(out)
    assert x.shape == (37, 2) and np.isfinite(x).all()
    assert "37 samples" in err
    out2 = tmp_path / "y.npy"
    run(["sample", "--checkpoint", trained / "checkpoint.npz", "--out", out2,
         "-n", 37, "--steps", 8, "--method", "heun", "--seed", 3])
    np.testing.assert_array_equal(np.load(out2), x)            # seeded


def test_animate_happy_path(trained, tmp_path, capsys):
    out = tmp_path / "flow.gif"
    code = run(["animate", "--checkpoint", trained / "checkpoint.npz", "--out", out,
                "-n", 50, "--steps", 10, "--frames", 5, "--fps", 10])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert out.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert "6 frames" in err


# ---- help -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command,flags", [
    ("train", ["--dataset", "--data", "--steps", "--batch-size", "--lr", "--hidden",
               "--activation", "--out", "--resume", "--no-plots", "--seed"]),
    ("sample", ["--checkpoint", "--out", "--method", "--steps", "--seed", "-n"]),
    ("animate", ["--checkpoint", "--out", "--frames", "--fps", "--method"]),
])
def test_help_of_each_subcommand(capsys, command, flags):
    assert run([command, "--help"]) == 0
    out, _ = capsys.readouterr()
    for f in flags:
        assert f in out, f
    if command == "train":
        assert "2spirals" in out


def test_no_command_prints_help_and_fails(capsys):
    assert run([]) != 0
    out, _ = capsys.readouterr()
    assert "train" in out and "sample" in out


def test_version(capsys):
    assert run(["--version"]) == 0
    assert "fmnumpy" in capsys.readouterr().out


# ---- as a process ------------------------------------------------------------------------------

def python_m(*argv):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fmnumpy", *map(str, argv)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_python_m_unknown_dataset_has_no_traceback(tmp_path):
    p = python_m("train", "--dataset", "nope", "--out", tmp_path, "--no-progress")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown dataset" in lines[0], p.stderr


def test_python_m_truncated_checkpoint_has_no_traceback(tmp_path, trained):
    path = bad_checkpoint(tmp_path, trained, "truncated")
    p = python_m("sample", "--checkpoint", path, "--out", tmp_path / "x.npy")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(path) in lines[0], p.stderr


def test_evaluate_prints_and_writes_metrics(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    code = run(["evaluate", "--checkpoint", trained / "checkpoint.npz", "-n", 60,
                "--steps", 5, "--json", out])
    printed, err = capsys.readouterr()
    assert code == 0, err
    for key in ("w2", "mmd", "energy", "nfe", "straightness"):
        assert key in printed
    m = json.loads(out.read_text())
    assert m["nfe"] == 5 * 4 and m["data"] == "2spirals"       # rk4: 4 evaluations a step
    assert m["w2"] > 0 and m["straightness"] > 0     # a 30-step flow is not straight


def test_evaluate_on_array_checkpoint_needs_data(tmp_path, capsys):
    from fmnumpy import FlowMatcher
    fm = FlowMatcher(hidden=(4,), seed=0).fit(np.random.default_rng(0).normal(size=(50, 2)),
                                               steps=3, batch_size=8)
    fm.save(tmp_path / "a.npz")
    code = run(["evaluate", "--checkpoint", tmp_path / "a.npz", "-n", 20, "--steps", 2])
    assert_one_line_error(capsys, code, "--data")


def test_sample_dopri5_with_log_prob(trained, tmp_path, capsys):
    out, lp = tmp_path / "x.npy", tmp_path / "lp.npy"
    code = run(["sample", "--checkpoint", trained / "checkpoint.npz", "--out", out,
                "-n", 25, "--method", "dopri5", "--log-prob", lp])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert np.load(out).shape == (25, 2) and np.load(lp).shape == (25,)
    assert np.isfinite(np.load(lp)).all() and "function evaluations" in err


def test_density_writes_a_heatmap_that_integrates_to_about_one(trained, tmp_path, capsys):
    out = tmp_path / "p.png"
    code = run(["density", "--checkpoint", trained / "checkpoint.npz", "--out", out,
                "--grid", 24, "--steps", 4, "--lim", 6])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mass = float(err.split("integrates to ")[1].split()[0])
    assert 0.9 < mass < 1.1                       # a coarse grid over almost all the mass


def test_metrics_are_logged_periodically(tmp_path, capsys):
    import json
    code = run(["train", "--out", tmp_path, "--steps", 10, *TINY, "--metrics-every", 5])
    _, err = capsys.readouterr()
    assert code == 0, err
    lines = (tmp_path / "metrics_log.jsonl").read_text().splitlines()
    rows = [json.loads(ln) for ln in lines]
    assert [r["step"] for r in rows] == [5, 10]
    for r in rows:
        assert set(r) >= {"step", "loss", "w2", "mmd", "energy", "n"} and r["n"] == 1000
        assert np.isfinite([r["loss"], r["w2"], r["mmd"], r["energy"]]).all()
    assert "step 5: loss" in err and "W2" in err
    code = run(["train", "--out", tmp_path / "bad", "--steps", 10, *TINY,
                "--metrics-every", -1])
    assert_one_line_error(capsys, code, "--metrics-every")


# ---- one command line per family -------------------------------------------------------

def test_each_family_trains_with_its_own_estimators_defaults():
    from fmnumpy import DiscreteFlowMatcher, FlowMatcher, ManifoldFlowMatcher
    from fmnumpy.cli import discrete, euclidean, main, manifold
    parse = main.build_parser().parse_args
    for module, argv, cls in ((euclidean, [], FlowMatcher),
                              (manifold, ["--manifold", "sphere"], ManifoldFlowMatcher),
                              (discrete, ["--discrete"], DiscreteFlowMatcher)):
        fm = module.model(parse(["train", *argv]))
        want = cls.default_params()
        if cls is ManifoldFlowMatcher:
            want["manifold"] = "sphere"
        assert type(fm) is cls and fm.get_params() == cls(**want).get_params(), cls
    assert manifold.model(parse(["train", "--manifold", "sphere"])).hidden == (256, 256, 256)
    assert discrete.model(parse(["train", "--discrete"])).lr == 1e-3
    fm = discrete.model(parse(["train", "--discrete", "--kappa-power", "2", "--clip", "0.5"]))
    assert (fm.power, fm.clip) == (2.0, 0.5)                  # given options reach the model


@pytest.mark.parametrize("argv,words", [
    (["train", "--discrete", "--sigma", "0.1"], ("--sigma", "flow matching on R^D", "discrete")),
    (["train", "--discrete", "--metrics-every", "5"], ("--metrics-every", "R^D")),
    (["train", "--manifold", "torus", "--path", "sb"], ("--path", "R^D", "on a manifold")),
    (["train", "--manifold", "torus", "--embed", "8"], ("--embed", "discrete", "on a manifold")),
    (["train", "--vocab-size", "8"], ("--vocab-size", "discrete", "on R^D does not")),
    (["train", "--x-dirs", "axes", "--manifold", "sphere"], ("--x-dirs", "R^D")),
])
def test_another_familys_option_is_refused_in_one_line(tmp_path, capsys, argv, words):
    code = run([*argv, "--steps", 1, "--out", tmp_path / "o", "--no-progress"])
    assert_one_line_error(capsys, code, *words)
    assert not (tmp_path / "o").exists()                        # refused before anything ran
