"""Sweeps on Dask (fmnumpy/sweep/, docs/sweeps.md): the spec's checks in one line, a tiny
grid on a 2-worker LocalCluster against runs of fmnumpy train itself, a rerun that skips
finished runs, a run killed mid-way and resumed bit for bit, the summary."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from reference import REPO, assert_one_line_error, run

pytest.importorskip("distributed")

from fmnumpy.cli.main import sweep_cli  # noqa: E402
from fmnumpy.sweep import execute, spec as sweep_spec, summary as sweep_summary  # noqa: E402

CLI = sweep_cli()

TINY = """
family = "euclidean"
seeds = [0]
[fixed]
steps = 30
batch-size = 16
warmup = 5
[grid]
dataset = ["2spirals", "moons"]
hidden = ["8,8", [12, 12]]
"""


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,words", [
    ('family = "gaussian"\n[grid]\ndataset = ["moons"]', "unknown family"),
    ('[grid]\ndataset = ["moons"]\nwidth = [3]', "unknown option 'width'"),
    ('[grid]\ndataset = []', "non-empty list"),
    ('seeds = [0]\n[fixed]\nsteps = 5', "the grid is empty"),
    ('[fixed]\nseed = 3\n[grid]\ndataset = ["moons"]', "set by the sweep"),
    ('[grid]\ndataset = ["moons"]\nvocab-size = [4]', "--vocab-size"),
    ('[grid]\ndataset = ["moons"]\nlr = ["fast"]', "invalid float"),
    ('family = "manifold"\n[grid]\ndataset = ["moons"]', "set family = 'euclidean'"),
    ('[grid]\ndataset = ["moons"]\n[baseline]\ndataset = "rings"', "baseline"),
    ('[grid\ndataset = 1', "not valid TOML"),
    ('[grid]\ndataset = ["moons"]\n[configs.a]\nlr = 1e-3\n[configs.b]\nlr = 1e-3',
     "set the same options"),
    ('[grid]\nlr = [1e-3]\n[configs.a]\nlr = 2e-3', "also in the grid"),
    ('[grid]\nconfig = ["a"]', "cannot be a grid key"),
    ('[grid]\ndataset = ["moons"]\n[configs.a]\nwidth = 3', "unknown option 'width'"),
    ('[configs.a]\nlr = 1e-3\n[baseline]\nconfig = "b"', "baseline config = 'b'"),
])
def test_bad_specs_are_one_line_before_anything_runs(tmp_path, capsys, text, words):
    code = run(["sweep", write(tmp_path, text), "--out", tmp_path / "out"])
    assert code == 2
    assert_one_line_error(capsys, code, words)
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_one_line_within_seconds(tmp_path, capsys):
    t = time.perf_counter()
    code = run(["sweep", write(tmp_path, TINY), "--out", tmp_path / "out", "--scheduler",
                "tcp://127.0.0.1:9"])
    assert_one_line_error(capsys, code, "no Dask scheduler answered")
    assert time.perf_counter() - t < execute.CONNECT_S + 20


def test_a_summary_of_no_sweep_is_one_line(tmp_path, capsys):
    code = run(["sweep", "--summary", tmp_path / "nothing"])
    assert_one_line_error(capsys, code, "holds no sweep")


def test_the_runs_are_the_grid_times_the_seeds_with_stable_folders():
    s = sweep_spec.check_spec({"seeds": [0, 1], "fixed": {"steps": 5},
                               "grid": {"dataset": ["moons", "rings"], "hidden": ["8", "16"]}},
                              CLI)
    runs = sweep_spec.runs(s)
    assert len(runs) == 8 and len({r.key for r in runs}) == 8
    assert [r.key for r in sweep_spec.runs(s)] == [r.key for r in runs]     # stable
    assert s.baseline == {"hidden": "8"}                   # the data pair the runs instead
    line = sweep_spec.argv(s, runs[0], "DIR", 1)
    assert line[:1] == ["train"] and "--resume" not in line and "--seed" in line


def test_named_configurations_multiply_the_grid_and_head_the_summary(tmp_path):
    """[configs.NAME]: one more axis, ``config``, first; its options merged with the fixed
    ones and the grid's; the summary's rows and ratios by configuration."""
    s = sweep_spec.check_spec({"seeds": [0, 1], "fixed": {"steps": 5},
                               "configs": {"small": {"hidden": [8, 8]},
                                           "wide": {"hidden": "32", "lr": 1e-3}},
                               "grid": {"dataset": ["moons", "rings"]}}, CLI)
    runs = sweep_spec.runs(s)
    assert len(runs) == 8 and len({r.key for r in runs}) == 8
    assert s.baseline == {"config": "small"}
    wide = [r for r in runs if dict(r.config)["config"] == "wide"]
    assert [k for k, _ in wide[0].config] == ["config", "dataset"]
    assert wide[0].options == {"steps": 5, "hidden": "32", "lr": 1e-3,
                               "dataset": wide[0].options["dataset"]}
    out = str(tmp_path / "out")
    for r, line in execute.prepare(s, out, 1):          # metrics without training
        w2 = (2.0 if dict(r.config)["config"] == "wide" else 1.0) * (1 + r.seed)
        (tmp_path / "out" / "runs" / r.key / "metrics.json").write_text(json.dumps({"w2": w2}))
    lines = sweep_summary.summarize(out, plot=False)
    assert "| config | dataset | seeds | w2 | w2 / baseline |" in lines
    assert "| wide | rings | 2 | 3 (2, 4) | 2.000 (2.000, 2.000) |" in lines
    assert (tmp_path / "out" / "summary.csv").read_text().splitlines()[0].startswith(
        "run,config,dataset,seed")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    p = write(d, TINY)
    code = run(["sweep", p, "--out", d / "out", "--workers", 2])
    return d, p, code


def test_a_tiny_grid_on_two_local_workers_equals_fmnumpy_train(swept, tmp_path, capsys):
    d, p, code = swept
    assert code == 0
    rows = (d / "out" / "summary.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["run", "dataset", "hidden", "seed"] and len(rows) == 5
    assert "w2" in rows[0] and (d / "out" / "summary.md").exists()
    assert (d / "out" / "summary.png").exists()
    # one run again with fmnumpy train, in this process: the same metrics, bit for bit
    folder = next((d / "out" / "runs").iterdir())
    opts = json.loads((folder / "options.json").read_text())
    line = [a if a != str(folder) else str(tmp_path / "again") for a in opts["argv"]]
    assert run(line) == 0
    mine = json.loads((tmp_path / "again" / "metrics.json").read_text())
    theirs = json.loads((folder / "metrics.json").read_text())
    assert mine["w2"] == theirs["w2"] and mine["final_loss"] == theirs["final_loss"]


def test_a_rerun_skips_finished_runs_and_remakes_the_summary(swept, capsys):
    d, p, _ = swept
    before = {f: os.path.getmtime(f / "metrics.json") for f in (d / "out" / "runs").iterdir()}
    capsys.readouterr()
    assert run(["sweep", p, "--out", d / "out"]) == 0
    assert "4 finished before, 0 to run" in capsys.readouterr().err
    assert before == {f: os.path.getmtime(f / "metrics.json") for f in before}
    (d / "out" / "summary.md").unlink()
    assert run(["sweep", "--summary", d / "out"]) == 0
    assert "dataset | hidden" in (d / "out" / "summary.md").read_text()


def test_a_folder_of_another_sweep_is_refused(swept, tmp_path, capsys):
    d, _, _ = swept
    other = write(tmp_path, TINY.replace("steps = 30", "steps = 31"))
    code = run(["sweep", other, "--out", d / "out"])
    assert_one_line_error(capsys, code, "another sweep's runs")


def test_a_run_killed_mid_way_resumes_bit_for_bit(tmp_path, monkeypatch):
    """SIGKILL a run's fmnumpy train after its first checkpoint; the task (train_run) then
    continues it with --resume and ends where an unbroken run ends: the same weights and
    metrics."""
    monkeypatch.setattr(sweep_spec, "CHECKPOINT_EVERY", 50)
    s = sweep_spec.check_spec({"fixed": {"steps": 3000, "batch_size": 16, "warmup": 5,
                                         "hidden": "8,8"}, "grid": {"dataset": ["moons"]}},
                              CLI)
    (r, line), = execute.prepare(s, str(tmp_path / "out"), 1)
    folder = execute.run_folder(str(tmp_path / "out"), r)
    proc = subprocess.Popen([sys.executable, "-m", "fmnumpy"] + line, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = os.path.join(folder, "checkpoint.npz")
    t0 = time.perf_counter()
    while not os.path.exists(ckpt) and time.perf_counter() - t0 < 120:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(ckpt) and not execute.finished(folder)
    resumed = execute.train_run(folder, line, CLI.main)
    unbroken_dir = str(tmp_path / "unbroken")
    whole = [a if a != folder else unbroken_dir for a in line]
    assert run(whole) == 0
    unbroken = json.loads(open(os.path.join(unbroken_dir, "metrics.json")).read())
    assert resumed["w2"] == unbroken["w2"] and resumed["final_loss"] == unbroken["final_loss"]
    a, b = np.load(ckpt), np.load(os.path.join(unbroken_dir, "checkpoint.npz"))
    assert all(np.array_equal(a[k], b[k]) for k in ("theta", "m", "v", "ema", "losses"))


def test_a_sweep_of_posterior_flows_runs_fmnumpy_sbi_train(tmp_path):
    """family "sbi": the runs are fmnumpy sbi train command lines (its options as keys,
    an unknown task refused before anything runs); one run's task in this process (the
    Dask side is the other tests')."""
    with pytest.raises(Exception, match="unknown task 'nope'"):
        sweep_spec.check_spec({"family": "sbi", "grid": {"task": ["nope"]}}, CLI)
    with pytest.raises(Exception, match="fmnumpy sbi train's long options"):
        sweep_spec.check_spec({"family": "sbi", "grid": {"x_freqs": [1]}}, CLI)
    s = sweep_spec.check_spec({"family": "sbi", "fixed": {"simulations": 300, "steps": 20,
                                                          "batch-size": 64},
                               "grid": {"task": ["gaussian_mixture"]}}, CLI)
    (r, line), = execute.prepare(s, str(tmp_path / "out"), 1)
    assert line[:2] == ["sbi", "train"] and "--no-plots" not in line
    metrics = execute.train_run(execute.run_folder(str(tmp_path / "out"), r), line, CLI.main)
    assert metrics["simulations"] == 300 and metrics["task"] == "gaussian_mixture"
    folder = execute.run_folder(str(tmp_path / "out"), r)
    os.remove(os.path.join(folder, "metrics.json"))            # as if killed before the end
    lines = []
    again = execute.train_run(folder, line, lambda line: lines.append(line) or CLI.main(line))
    assert lines[0][-1] == "--resume"
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {
        k: v for k, v in metrics.items() if k != "train_seconds"}
    sweep_summary.summarize(str(tmp_path / "out"), plot=False)
    assert "final_loss" in (tmp_path / "out" / "summary.csv").read_text()
