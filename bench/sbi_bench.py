"""Simulation-based inference on sbibm's tasks: fmnumpy's posterior flow (fmnumpy.sbi,
docs/sbi.md) beside the sbi package's NPE and FMPE, trained on the very same simulations,
scored by C2ST (fmnumpy.metrics.c2st, sbibm's definition) of 10,000 posterior samples
against sbibm's 10,000 reference posterior samples of each of its ten observations.

The reference data come from the sbibm 1.1.0 wheel, read as a zip file (its modules are
never imported): ``pip download --no-deps sbibm==1.1.0 -d bench/.sbibm`` (done on first
use).  sbi runs in another Python that has torch and sbi (``--torch-python``), through
bench/sbi_torch.py; fmnumpy never needs them.

    python bench/sbi_bench.py check                      # the simulators against the reference data
    python bench/sbi_bench.py c2st                       # fmnumpy's C2ST against scikit-learn's
    python bench/sbi_bench.py run [--tasks ...] [--budgets 1000 10000 100000] [--seeds 0 1 2]
        [--methods fmnumpy npe fmpe] [--torch-python PY] [--out bench/results/sbi.jsonl]
        [--sweep [--workers 2 --threads-per-run 1 | --scheduler ADDRESS]]
    python bench/sbi_bench.py time --tasks ... --budgets ... --rounds 2 --out T.jsonl
                                                         # training seconds alone, alternated
    python bench/sbi_bench.py table                      # bench/results/sbi.md from the JSONL
    python bench/sbi_bench.py pictures                   # docs/images/sbi_*.png

Runs append to the JSONL as they end; a rerun skips (task, budget, seed, method) done.
"""
import argparse
import bz2
import glob
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy.metrics import c2st  # noqa: E402
from fmnumpy.sbi import PosteriorFlow, get_task, select_posterior, simulate  # noqa: E402
from fmnumpy.sbi.posterior import held_out_loss  # noqa: E402
from fmnumpy.sbi.tasks import (gaussian_linear_posterior, glm_design,  # noqa: E402
                               glm_log_posterior, glm_prior_precision)

HERE = os.path.dirname(os.path.abspath(__file__))
WHEEL_DIR = os.path.join(HERE, ".sbibm")
TASKS = ("two_moons", "gaussian_mixture", "slcp", "gaussian_linear", "bernoulli_glm",
         "bernoulli_glm_raw")
BUDGETS = (1000, 10_000, 100_000)
OBSERVATIONS = tuple(range(1, 11))
N = 10_000                       # posterior samples per observation, as sbibm's
OUT = os.path.join(HERE, "results", "sbi.jsonl")
WEIGHT_DECAYS = (0.0, 1.0)       # fmnumpy_wd: the candidates, chosen by held-out loss


def wheel():
    found = glob.glob(os.path.join(WHEEL_DIR, "sbibm-1.1.0-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "sbibm==1.1.0", "-d", WHEEL_DIR], check=True)
        found = glob.glob(os.path.join(WHEEL_DIR, "sbibm-1.1.0-*.whl"))
    return found[0]


def _csv(z, name, packed=False):
    raw = z.read(name)
    text = bz2.decompress(raw).decode() if packed else raw.decode()
    return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, ndmin=2)


def reference(task, k):
    """(observation (dim_x,), reference posterior samples (10000, dim_theta), true theta)
    of sbibm's observation k (1-10) of ``task`` (bernoulli_glm_raw: bernoulli_glm's, observed
    as its raw spike train)."""
    base = _files(task, k)
    with zipfile.ZipFile(wheel()) as z:
        return (_observation(z, task, k),
                _csv(z, base + "reference_posterior_samples.csv.bz2", packed=True),
                _csv(z, base + "true_parameters.csv")[0])


def _files(task, k):
    """The wheel's folder of observation k of ``task`` (bernoulli_glm_raw: bernoulli_glm's)."""
    name = "bernoulli_glm" if task == "bernoulli_glm_raw" else task
    return f"sbibm/tasks/{name}/files/num_observation_{k}/"


def _observation(z, task, k):
    """Observation k of ``task`` from the open wheel z (bernoulli_glm_raw: the raw spikes)."""
    raw = task == "bernoulli_glm_raw"
    return _csv(z, _files(task, k) + ("observation_raw.csv" if raw else "observation.csv"))[0]


# ---- the simulators against the reference data ---------------------------------------------

def check(a):
    """Each simulator against sbibm's data: gaussian_linear's closed-form posterior
    against the reference samples (C2ST of 2,000 each), and bernoulli_glm's exact posterior
    (importance resampling, glm_posterior) likewise; for every task, simulations at the reference
    posterior samples against the observation (where x_obs falls among them: the share of
    simulations farther, in their own Mahalanobis distance, from their mean than x_obs; a
    simulator unlike the benchmark's puts x_obs far out, near 0)."""
    lines = ["| task | observation | C2ST exact posterior vs reference | x_obs: share farther |",
             "|---|---|---|---|"]
    for name in a.tasks:
        task = get_task(name)
        for k in a.observations:
            xo, ref, _ = reference(name, k)
            rng = np.random.default_rng([k, 50])
            xs = task.simulate(ref, rng)
            mu, cov = xs.mean(axis=0), np.cov(xs.T) + 1e-12 * np.eye(xs.shape[1])
            inv = np.linalg.inv(cov)
            md = np.einsum("ni,ij,nj->n", xs - mu, inv, xs - mu)
            mo = float((xo - mu) @ inv @ (xo - mu))
            farther = float(np.mean(md > mo))
            closed = ""
            if name == "gaussian_linear":           # 2,000 of each: the 10-D test is slow
                closed = f"{c2st(ref[:2000], gaussian_linear_posterior(xo, 2000, rng)):.3f}"
            if name.startswith("bernoulli_glm"):
                stats = xo @ glm_design() if name.endswith("raw") else xo
                closed = f"{c2st(ref[:2000], glm_posterior(stats, 2000, rng)):.3f}"
            lines.append(f"| {name} | {k} | {closed} | {farther:.3f} |")
            print(lines[-1], flush=True)
    if any(name.startswith("bernoulli_glm") for name in a.tasks):
        lines += [""] + glm_files()
        print("\n".join(lines[-2:]), flush=True)
    return lines


def glm_files():
    """bernoulli_glm's fixed data against the wheel's: the design matrix's 4,000 float32
    (the tail of the legacy PyTorch file design_matrix.pt) equal to tasks.glm_design(), and
    the ten observations x = X^T y of their raw spike trains y.  Returns two lines."""
    X = glm_design()
    with zipfile.ZipFile(wheel()) as z:
        raw = z.read("sbibm/tasks/bernoulli_glm/files/design_matrix.pt")
        gap = max(float(np.abs(_observation(z, "bernoulli_glm_raw", k) @ X
                               - _observation(z, "bernoulli_glm", k)).max())
                  for k in OBSERVATIONS)
    theirs = np.frombuffer(raw[-4000:], dtype="<f4").reshape(100, 10)
    return [f"bernoulli_glm design matrix equal to the wheel's: "
            f"{np.array_equal(theirs, X)}",
            f"bernoulli_glm observations x = X^T y of their raw spikes: max |difference| "
            f"{gap:.1e} (float32 files)"]


def glm_posterior(x, n, rng, draws=100_000):
    """n draws of bernoulli_glm's exact posterior given its statistics x, by importance
    resampling: the proposal N(mode, 2 H^-1) of the log-posterior's mode and Hessian H
    (Newton's method), weighted by the unnormalized posterior (tasks.glm_log_posterior)."""
    X, P = glm_design(), glm_prior_precision()
    m = np.zeros(P.shape[0])
    for _ in range(50):                          # Newton on a concave log-posterior
        p = 1.0 / (1.0 + np.exp(-(X @ m)))
        H = X.T @ (X * (p * (1.0 - p))[:, None]) + P
        m = m + np.linalg.solve(H, x - X.T @ p - P @ m)
    L = np.linalg.cholesky(2.0 * np.linalg.inv(H))
    z = rng.standard_normal((draws, m.shape[0]))
    th = m + z @ L.T
    logw = glm_log_posterior(th, x) + 0.5 * (z ** 2).sum(axis=1)
    w = np.exp(logw - logw.max())
    return th[rng.choice(draws, size=n, p=w / w.sum())]


def c2st_check(a):
    """fmnumpy.metrics.c2st against scikit-learn's MLPClassifier with sbibm's settings
    (bench only: pip install scikit-learn) on N(0, I) against N(s 1, I) in 2 and 5
    dimensions, 2,000 points each, with the best classifier's accuracy Phi(s sqrt(D) / 2)."""
    import math
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier
    lines = ["| D | shift | fmnumpy c2st | scikit-learn | Bayes accuracy |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for d in (2, 5):
        for shift in (0.0, 0.3):
            rng = np.random.default_rng([d, int(shift * 10), 70])
            x, y = rng.standard_normal((2000, d)), rng.standard_normal((2000, d)) + shift
            m, s = x.mean(axis=0), x.std(axis=0)
            data = np.concatenate([(x - m) / s, (y - m) / s])
            clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * d, 10 * d),
                                max_iter=10000, solver="adam", random_state=1)
            theirs = cross_val_score(clf, data, np.r_[np.zeros(2000), np.ones(2000)],
                                     cv=KFold(5, shuffle=True, random_state=1)).mean()
            bayes = 0.5 * (1 + math.erf(shift * math.sqrt(d) / 2 / math.sqrt(2)))
            lines.append(f"| {d} | {shift} | {c2st(x, y):.4f} | {theirs:.4f} | {bayes:.4f} |")
            print(lines[-1], flush=True)
    return lines


# ---- the runs --------------------------------------------------------------------------------

EMBEDDING = (128, 10)      # fmnumpy_embed: the observation through an MLP 128 wide into 10


def posterior_flow(method, task, seed, weight_decay=0.0):
    """fmnumpy's posterior flow of ``method``: fmnumpy (PosteriorFlow's defaults),
    fmnumpy_embed (the observation through ``EMBEDDING``) or, of fmnumpy_wd, the one of
    ``weight_decay``."""
    return PosteriorFlow(task=task, seed=seed, weight_decay=weight_decay, condition_embedding=(
        EMBEDDING if method == "fmnumpy_embed" else ()))


def fmnumpy_fit(method, task, theta, x, seed, steps, validation_fraction=None):
    """(the trained posterior flow of ``method``, more to record): fmnumpy_wd trains one
    flow for each of ``WEIGHT_DECAYS`` and keeps the one of lowest held-out loss."""
    more = {} if validation_fraction is None else {"validation_fraction": validation_fraction}
    decays = WEIGHT_DECAYS if method == "fmnumpy_wd" else (0.0,)
    flows = [posterior_flow(method, task, seed, w).fit_simulations(theta, x, steps=steps,
                                                                   **more) for w in decays]
    if len(flows) == 1:
        return flows[0], {}
    q, losses = select_posterior(flows)
    return q, {"weight_decay": q.weight_decay, "held_out_loss": losses,
               "steps_each": [f.step_ for f in flows]}


def fmnumpy_run(method, task, theta, x, seed, obs, steps, validation_fraction=None):
    t0 = time.perf_counter()
    q, more = fmnumpy_fit(method, task, theta, x, seed, steps, validation_fraction)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = [q.sample_posterior(xo, N, seed=k) for k, xo in enumerate(obs)]
    return samples, {"train_s": train_s, "sample_s": time.perf_counter() - t0,
                     "steps": q.step_, **more}


def torch_run(method, task, theta, x, seed, obs, python, threads=2, n=N):
    t = get_task(task)
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.npz"), os.path.join(d, "out.npz")
        prior = ({"low": t.bounds[0], "high": t.bounds[1]} if t.bounds is not None
                 else {"precision": t.precision})
        np.savez(src, theta=theta, x=x, obs=np.stack(obs), n=n, **prior)
        line = subprocess.run([python, os.path.join(HERE, "sbi_torch.py"), method, src, dst,
                               str(seed), str(threads)], check=True, capture_output=True, text=True,
                              cwd=d)                # sbi writes its logs into the cwd
        info = json.loads(line.stdout[line.stdout.rindex("{"):])    # after sbi's own prints
        return list(np.load(dst)["samples"]), info


def done_runs(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {(r["task"], r["budget"], r["seed"], r["method"])
                for r in map(json.loads, f)}


def fmnumpy_sweep(a, done):
    """``--sweep``: fmnumpy's runs not yet done, trained first as one ``fmnumpy sweep`` of
    ``sbi train`` (tasks x budgets x seeds; Dask workers, bench/common.py run_sweep);
    returns {(task, budget, seed): its folder}."""
    from bench import common
    want = [(t, b, s) for t in a.tasks for b in a.budgets for s in a.seeds
            if (t, b, s, "fmnumpy") not in done]
    if not want:
        return {}
    runs = common.run_sweep({"family": "sbi", "seeds": sorted({s for _, _, s in want}),
                             "grid": {"task": sorted({t for t, _, _ in want}),
                                      "simulations": sorted({b for _, b, _ in want})}},
                            "sbi", a)
    return {(r.options["task"], r.options["simulations"], r.seed): f for r, f in runs}


def scored_run(folder, obs):
    """The samples of a swept posterior flow (its checkpoint) for each observation."""
    q = PosteriorFlow.load(os.path.join(folder, "checkpoint.npz"))
    with open(os.path.join(folder, "metrics.json")) as f:
        m = json.load(f)
    t0 = time.perf_counter()
    samples = [q.sample_posterior(xo, N, seed=k) for k, xo in enumerate(obs)]
    return samples, {"train_s": m["train_seconds"], "sample_s": time.perf_counter() - t0,
                     "steps": q.step_, "swept": True}


def append(path, rec, line):
    """Print ``line`` and append the record ``rec`` to the JSONL at ``path``."""
    print(line, flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def run(a):
    done = done_runs(a.out)
    swept = fmnumpy_sweep(a, done) if a.sweep and "fmnumpy" in a.methods else {}
    for task in a.tasks:
        refs = [reference(task, k) for k in a.observations]
        obs = [r[0] for r in refs]
        for budget in a.budgets:
            for seed in a.seeds:
                theta, x = simulate(task, budget, seed=seed)
                for method in a.methods:
                    if (task, budget, seed, method) in done:
                        continue
                    if method == "fmnumpy" and (task, budget, seed) in swept:
                        samples, info = scored_run(swept[task, budget, seed], obs)
                    elif method.startswith("fmnumpy"):
                        samples, info = fmnumpy_run(method, task, theta, x, seed, obs,
                                                    a.steps, a.validation_fraction)
                    else:
                        samples, info = torch_run(method, task, theta, x, seed, obs,
                                                  a.torch_python, a.torch_threads)
                    scores = [c2st(r[1], s) for r, s in zip(refs, samples)]
                    rec = dict(task=task, budget=budget, seed=seed, method=method,
                               observations=list(a.observations), c2st=scores,
                               c2st_mean=float(np.mean(scores)), **info)
                    append(a.out, rec, f"{task} {budget} seed {seed} {method}: C2ST "
                           f"{rec['c2st_mean']:.3f} ({min(scores):.3f}-{max(scores):.3f}), "
                           f"train {info['train_s']:.1f} s")


def timing(a):
    """Training seconds alone: for each (task, budget, seed), ``--rounds`` rounds of training
    every method on the same simulations, the methods' order turned by one each round (so
    they alternate in one window); no sampling, no scores.  Appends to ``--out``."""
    for task in a.tasks:
        for budget in a.budgets:
            for seed in a.seeds:
                theta, x = simulate(task, budget, seed=seed)
                for r in range(a.rounds):
                    k = r % len(a.methods)
                    for method in a.methods[k:] + a.methods[:k]:
                        if method.startswith("fmnumpy"):
                            t0 = time.perf_counter()
                            q, _ = fmnumpy_fit(method, task, theta, x, seed, a.steps)
                            info = {"train_s": time.perf_counter() - t0, "steps": q.step_}
                        else:
                            _, info = torch_run(method, task, theta, x, seed, [x[0]],
                                                a.torch_python, a.torch_threads, n=0)
                        rec = dict(task=task, budget=budget, seed=seed, method=method,
                                   round=r, **info)
                        append(a.out, rec, json.dumps(rec))


# ---- options of the posterior flow, by a cheap proxy -------------------------------------

# named options of PosteriorFlow (keys starting with _ go to fit_simulations)
OPTIONS = {
    "default": {},
    "lr1e-3": {"lr": 1e-3},
    "wd0.1": {"weight_decay": 0.1},
    "wd1": {"weight_decay": 1.0},
    "wd3": {"weight_decay": 3.0},
    "h64x3": {"hidden": (64, 64, 64)},
    "h256": {"hidden": (256, 256, 256, 256)},
    "h6x128": {"hidden": (128,) * 6},
    "bs64": {"_batch_size": 64},
    "pat10": {"_patience": 10},
    "tp1": {"time_power": 1.0},
    "cap100k": {"_steps": 100_000},
    "wd1_100k": {"weight_decay": 1.0, "_steps": 100_000},
    "wd1bs64": {"weight_decay": 1.0, "_batch_size": 64},
}
NLL_POINTS = 1000          # reference posterior samples per observation in ``options``
OPTIONS_NOTE = (
    "`python bench/sbi_bench.py options --tasks T --budgets B --seeds S --options ... --out "
    "bench/results/sbi_options.jsonl`: each option trained on the same simulations per "
    "seed; reference NLL: the mean over the ten observations of -log q(theta | x_obs) at "
    f"{NLL_POINTS:,} of sbibm's reference posterior samples (H(p) + KL(p || q), lower is "
    "closer); minus default's: paired per seed; held-out loss: the best of early stopping "
    "(comparable across options of one seed and time law). Options: OPTIONS in "
    "bench/sbi_bench.py (wd: AdamW's weight decay, h: hidden widths, bs: batch size, pat: "
    "patience, tp: time_power, cap: the most steps).")


def options(a):
    """For each (task, budget, seed) and each of ``--options`` (names of ``OPTIONS``),
    trained on the same simulations: the mean over the observations of -log q(theta | x_obs)
    of ``NLL_POINTS`` reference posterior samples (the reference NLL: the cross-entropy
    H(p) + KL(p || q), p fixed, so lower is closer; seconds where C2ST takes minutes) and
    the best held-out loss of early stopping.  Appends to ``--out``."""
    for task in a.tasks:
        refs = [reference(task, k) for k in a.observations]
        for budget in a.budgets:
            for seed in a.seeds:
                theta, x = simulate(task, budget, seed=seed)
                for name in a.options:
                    model = {k: v for k, v in OPTIONS[name].items() if k[0] != "_"}
                    fit = {k[1:]: v for k, v in OPTIONS[name].items() if k[0] == "_"}
                    q = PosteriorFlow(task=task, seed=seed, **model)
                    t0 = time.perf_counter()
                    q.fit_simulations(theta, x, **fit)
                    train_s = time.perf_counter() - t0
                    nll = [-float(np.mean(q.log_posterior(r[1][:NLL_POINTS], r[0])))
                           for r in refs]
                    rec = dict(task=task, budget=budget, seed=seed, option=name,
                               nll=float(np.mean(nll)), nll_each=nll, steps=q.step_,
                               train_s=train_s, held_out=held_out_loss(q))
                    append(a.out, rec, f"{task} {budget} seed {seed} {name}: reference NLL "
                           f"{rec['nll']:.3f}, held-out loss {rec['held_out']:.4f}, "
                           f"{q.step_} steps")


def options_table(path):
    """Markdown lines of ``options``' records: per (task, budget) and option the mean
    reference NLL and held-out loss over seeds, and the NLL paired against default."""
    with open(path) as f:
        recs = [json.loads(line) for line in f]
    lines = ["| task | simulations | option | seeds | reference NLL | minus default's, "
             "paired (min to max) | held-out loss | steps |", "|" + "---|" * 8]
    for task in [t for t in TASKS if any(r["task"] == t for r in recs)]:
        for budget in sorted({r["budget"] for r in recs if r["task"] == task}):
            rs = [r for r in recs if (r["task"], r["budget"]) == (task, budget)]
            base = {r["seed"]: r for r in rs if r["option"] == "default"}
            for name in [o for o in OPTIONS if any(r["option"] == o for r in rs)]:
                mine = [r for r in rs if r["option"] == name]
                d = [r["nll"] - base[r["seed"]]["nll"] for r in mine if r["seed"] in base]
                paired = "" if name == "default" or not d else \
                    f"{np.mean(d):+.3f} ({min(d):+.3f} to {max(d):+.3f})"
                lines.append(f"| {task} | {budget:,} | {name} | {len(mine)} | "
                             f"{np.mean([r['nll'] for r in mine]):.3f} | {paired} | "
                             f"{np.mean([r['held_out'] for r in mine]):.4f} | "
                             f"{np.mean([r['steps'] for r in mine]):.0f} |")
    return lines


# ---- the table and the pictures ---------------------------------------------------------------

def table(a):
    recs, seen = [], set()
    for path in [a.out] + (a.more or []):            # runs of other processes too
        with open(path) as f:
            for r in map(json.loads, f):
                key = (r["task"], r["budget"], r["seed"], r["method"])
                if key not in seen:                  # the first record of a run counts
                    seen.add(key)
                    recs.append(r)
    methods = [m for m in ("fmnumpy", "fmnumpy_wd", "fmnumpy_embed", "npe", "fmpe")
               if any(r["method"] == m for r in recs)]
    head = ["task", "simulations"] + [f"{m} C2ST" for m in methods] + \
        [f"{m} train s" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in [t for t in TASKS if any(r["task"] == t for r in recs)]:
        for budget in sorted({r["budget"] for r in recs if r["task"] == task}):
            cells, secs = [], []
            for m in methods:
                rs = [r for r in recs if (r["task"], r["budget"], r["method"]) == (task, budget, m)]
                if not rs:
                    cells.append("")
                    secs.append("")
                    continue
                per_seed = [r["c2st_mean"] for r in rs]
                cells.append(f"{np.mean(per_seed):.3f} ({min(per_seed):.3f}-{max(per_seed):.3f}, "
                             f"{len(rs)} seed{'s' if len(rs) > 1 else ''})")
                secs.append(f"{np.mean([r['train_s'] for r in rs]):.0f}")
            lines.append(f"| {task} | {budget:,} | " + " | ".join(cells + secs) + " |")
    text = "\n".join(lines)
    print(text)
    if a.md:
        runs = sorted({(r["method"], r["seed"]) for r in recs})
        head = ["# Simulation-based inference against sbi", "",
                "`python bench/sbi_bench.py run --torch-python PY` (PY: a Python with torch "
                "2.13.0+cpu and sbi 0.27.0), then `python bench/sbi_bench.py table --md "
                "bench/results/sbi.md`; on this 2-core machine.",
                "", "C2ST (sbibm's definition, fmnumpy.metrics.c2st; 0.5 is best) of 10,000 "
                "posterior samples against sbibm 1.1.0's 10,000 reference posterior samples, "
                "mean over the ten observations; per cell the mean over seeds (min-max of the "
                "seeds' means, seeds). Every method trains on the very same simulations of a "
                "seed (fmnumpy.sbi.simulate). Training seconds: the mean over seeds; "
                + (a.timing_note or "each method in turn in one process per (task, budget, "
                   "seed).") + " fmnumpy: "
                "PosteriorFlow's defaults (4 x 128 SiLU, early stopping on a held-out tenth, at "
                "most one step per simulation within 30,000-100,000); fmnumpy_wd: fmnumpy "
                "trained with weight decay 0 and 1 (WEIGHT_DECAYS), the run of lower held-out "
                "loss kept (its seconds: both runs); npe: sbi's NPE with its default MAF; fmpe: "
                "sbi's FMPE with its default MLP; both with sbi's early stopping.", "",
                "Runs: " + ", ".join(f"{m} seed {s}" for m, s in runs), ""]
        with open(a.md, "w") as f:
            f.write("\n".join(head) + "\n" + text + "\n")
            if a.times:
                f.write("\n## Training time alone\n\n" + (a.times_note or "") + "\n\n"
                        + "\n".join(time_table(a.times)) + "\n")
            if a.options_results:
                f.write("\n## The posterior flow's options\n\n" + OPTIONS_NOTE + "\n\n"
                        + "\n".join(options_table(a.options_results)) + "\n")
    return text


def time_table(path):
    """Lines of a Markdown table of ``time``'s records: per (task, budget) each method's
    training seconds (mean over rounds and seeds, min-max) and its ratio to fmnumpy's."""
    with open(path) as f:
        recs = [json.loads(line) for line in f]
    methods = [m for m in ("fmnumpy", "fmnumpy_wd", "fmnumpy_embed", "npe", "fmpe")
               if any(r["method"] == m for r in recs)]
    lines = ["| task | simulations | rounds | " + " | ".join(f"{m} train s" for m in methods)
             + " | " + " | ".join(f"{m} / fmnumpy" for m in methods[1:]) + " |",
             "|" + "---|" * (3 + 2 * len(methods) - 1)]
    for task in [t for t in TASKS if any(r["task"] == t for r in recs)]:
        for budget in sorted({r["budget"] for r in recs if r["task"] == task}):
            secs = {m: [r["train_s"] for r in recs if (r["task"], r["budget"], r["method"])
                        == (task, budget, m)] for m in methods}
            cells = [f"{np.mean(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else ""
                     for v in secs.values()]
            base = np.mean(secs["fmnumpy"]) if secs.get("fmnumpy") else np.nan
            ratios = [f"{np.mean(secs[m]) / base:.2f}x" if secs[m] else "" for m in methods[1:]]
            n = max(len(v) for v in secs.values())
            lines.append(f"| {task} | {budget:,} | {n} | " + " | ".join(cells + ratios) + " |")
    return lines


def pictures(a):
    """Pair plots of fmnumpy's posterior beside the reference samples, observation 1 of
    each task, from 10^4 simulations (seed 0)."""
    from fmnumpy.plots.sbi import pair_plot
    for task in a.tasks:
        xo, ref, true = reference(task, 1)
        theta, x = simulate(task, 10_000, seed=0)
        q = PosteriorFlow(task=task, seed=0).fit_simulations(theta, x, steps=a.steps)
        print(f"{task}: {q.step_} steps", flush=True)
        s = q.sample_posterior(xo, N)
        out = os.path.join(os.path.dirname(HERE), "docs", "images", f"sbi_{task}.png")
        pair_plot(out, s, ref, true, title=f"{task}, observation 1, 10,000 simulations: "
                  f"C2ST {c2st(ref, s):.3f}")
        print(out, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("check", "c2st", "run", "time", "options", "table",
                                     "pictures"))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["fmnumpy", "npe", "fmpe"],
                    choices=("fmnumpy", "fmnumpy_wd", "fmnumpy_embed", "npe", "fmpe"),
                    help="fmnumpy_wd: fmnumpy trained with each of WEIGHT_DECAYS, the one "
                    "of lowest held-out loss kept; fmnumpy_embed: fmnumpy with the "
                    "observation through an MLP (EMBEDDING widths)")
    ap.add_argument("--observations", type=int, nargs="+", default=list(OBSERVATIONS))
    ap.add_argument("--steps", type=int, default=None, help="fmnumpy's training steps "
                    "(default: PosteriorFlow's)")
    ap.add_argument("--validation-fraction", type=float, default=None,
                    help="fmnumpy's held-out share for early stopping (default "
                    "PosteriorFlow's; 0: none, --steps steps)")
    ap.add_argument("--torch-python", default="python", help="a Python with torch and sbi")
    ap.add_argument("--torch-threads", type=int, default=2, help="torch's threads (set "
                    "NUMBA_NUM_THREADS and OMP_NUM_THREADS alike for fmnumpy)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--options", nargs="+", default=["default"], choices=list(OPTIONS),
                    help="options: the posterior flow's options to compare")
    ap.add_argument("--options-results", default=None, help="table: also the table of "
                    "this JSONL of `options` runs")
    ap.add_argument("--rounds", type=int, default=2, help="time: rounds of every method")
    ap.add_argument("--md", default=None, help="table: also write it to this Markdown file")
    ap.add_argument("--more", nargs="+", default=None, help="table: more JSONL files of runs")
    ap.add_argument("--timing-note", default=None, help="table: how the runs were timed")
    ap.add_argument("--times", default=None, help="table: also the training times of this "
                    "JSONL of `time` runs")
    ap.add_argument("--times-note", default=None, help="table: how the `time` runs ran")
    ap.add_argument("--sweep", action="store_true", help="train fmnumpy's runs first as one "
                    "fmnumpy sweep (family sbi) on Dask, then score them")
    from bench.common import sweep_arguments
    sweep_arguments(ap)
    a = ap.parse_args(argv)
    return {"check": check, "c2st": c2st_check, "run": run, "time": timing,
            "options": options, "table": table, "pictures": pictures}[a.what](a)


if __name__ == "__main__":
    main()
