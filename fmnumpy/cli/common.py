"""What the three families' command lines share: which family takes which option, the
defaults read from each family's estimator, the one-line refusals, the metric
printer.

Every option of ``train``, ``sample``, ``animate``, ``evaluate`` and ``density`` that
not all families take is parsed with the default None ("not given"); the family's
module fills in its own default (its estimator's) and :func:`refuse_others` turns an
option the family does not take into one line naming the families that do.
"""
import inspect
import json
import os
import sys
import time

from fmnumpy.errors import FmnumpyError

PROG = "fmnumpy"
FAMILY_WORDS = {"euclidean": "flow matching on R^D", "manifold": "flow matching on a manifold "
                "(--manifold)", "discrete": "discrete flow matching (--discrete)"}

# the options of each command, as argparse dests, that a family takes (the rest are
# refused).  The same table reaches `fmnumpy COMMAND --help` and docs/guide.md.
_COMMON_TRAIN = {"dataset", "data", "steps", "batch_size", "lr", "optimizer", "weight_decay",
                 "clip", "warmup", "schedule", "lr_min", "ema_decay", "hidden", "activation",
                 "time_freqs", "seed", "out", "resume", "checkpoint_every", "threads",
                 "no_progress", "no_plots", "snapshot_every", "manifold", "discrete"}
OPTIONS = {
    "train": {
        "euclidean": _COMMON_TRAIN | {
            "source", "x_freqs", "x_dirs", "sigma", "conditional", "label_column",
            "condition_columns", "condition_embedding", "label_dropout",
            "sigma_min", "path", "sb_sigma", "time_power", "coupling", "sinkhorn_reg",
            "metrics_every", "device", "objective", "map_fraction", "adaptive_power"},
        "manifold": _COMMON_TRAIN | {"x_freqs", "time_power", "coupling", "latlon", "preset"},
        "discrete": _COMMON_TRAIN | {"source", "vocab_size", "kappa_power", "embed"},
    },
    "sample": {
        "euclidean": {"checkpoint", "n", "method", "rtol", "atol", "steps", "seed", "threads",
                      "device", "log_prob", "out", "plot", "label", "guidance", "qmc", "noise",
                      "condition"},
        "manifold": {"checkpoint", "n", "method", "steps", "seed", "threads", "log_prob",
                     "out", "plot"},
        "discrete": {"checkpoint", "n", "steps", "seed", "threads", "out", "plot"},
    },
    "animate": {
        "euclidean": {"checkpoint", "n", "method", "steps", "seed", "threads", "device",
                      "out", "frames", "fps"},
        "manifold": {"checkpoint", "n", "method", "steps", "seed", "threads", "out",
                     "frames", "fps"},
    },
    "evaluate": {
        "euclidean": {"checkpoint", "n", "method", "steps", "seed", "threads", "device",
                      "dataset", "data", "json", "qmc"},
        "manifold": {"checkpoint", "n", "steps", "seed", "threads", "dataset", "json"},
        "discrete": {"checkpoint", "n", "steps", "seed", "threads", "dataset", "data",
                     "json"},
    },
    "density": {
        "euclidean": {"checkpoint", "out", "grid", "lim", "steps", "threads"},
        "manifold": {"checkpoint", "out", "grid", "steps", "threads"},
    },
    "reflow": {
        "euclidean": {"checkpoint", "out", "pairs", "steps", "batch_size", "init", "eval_n",
                      "seed", "threads", "no_progress"},
    },
}
ALWAYS = {"command"}


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def flag(dest):
    return "--" + dest.replace("_", "-") if dest != "n" else "-n"


def given(a, dest):
    """Whether option ``dest`` was given on the command line (its parsed value is not
    the "not given" None; a flag given is True)."""
    value = getattr(a, dest, None)
    return value is not None and value is not False


def refuse_others(a, family):
    """One FmnumpyError line for the first option given that ``family`` does not take
    in this command, naming the families that take it."""
    takes = OPTIONS[a.command]
    if family not in takes:
        raise FmnumpyError(f"`{a.command}` is not available for {FAMILY_WORDS[family]}; "
                           f"it takes: {', '.join(c for c in OPTIONS if family in OPTIONS[c])}")
    for dest in sorted(vars(a)):
        if dest in ALWAYS or dest in takes[family] or not given(a, dest):
            continue
        others = [FAMILY_WORDS[f] for f in takes if dest in takes[f]]
        where = (" is an option of " + " and of ".join(others)) if others else " is not an option here"
        raise FmnumpyError(f"{flag(dest)}{where}; {FAMILY_WORDS[family]} does not take it, "
                           "so drop it")


def parse_numbers(flag, text, kind=float):
    """The comma-separated numbers of an option ("1.5,-2" -> [1.5, -2.0]), or one line."""
    try:
        out = [kind(v) for v in str(text).split(",")]
    except ValueError:
        raise FmnumpyError(f"{flag} takes numbers separated by commas, got {text!r}") from None
    return out


def fill(a, defaults):
    """Set each option of ``defaults`` ({dest: value}) that was not given."""
    for dest, value in defaults.items():
        if getattr(a, dest, None) is None:
            setattr(a, dest, value)


def fit_defaults(cls):
    """{name: default} of ``cls.fit``: the training run's defaults (steps, batch_size,
    the data set) that the family's command line uses."""
    return {k: p.default for k, p in inspect.signature(cls.fit).parameters.items()
            if p.default is not inspect.Parameter.empty}


def model_options(a, cls, rename=None):
    """The constructor arguments of ``cls`` given as train options (``rename``: {param:
    dest} where the option's name differs), the others left at the family's defaults."""
    rename = rename or {}
    out = {}
    for name in cls.param_names():
        dest = rename.get(name, name)
        if given(a, dest):
            out[name] = getattr(a, dest)
    return out


def resumed_conflicts(a, fm, ckpt, names, rename=None):
    """A --resume continues a checkpoint: an option given for one of its parameters
    ``names`` (the option ``rename.get(name, name)``) with another value is one line."""
    rename = rename or {}
    for name in names:
        dest = rename.get(name, name)
        if given(a, dest) and getattr(a, dest) != getattr(fm, name):
            raise resume_refusal(ckpt, dest, getattr(fm, name), getattr(a, dest))


def resume_refusal(ckpt, dest, had, asked):
    """The one line of a --resume whose option ``dest`` asks ``asked`` of the checkpoint
    ``ckpt`` trained with ``had``."""
    return FmnumpyError(f"{ckpt} was trained with {flag(dest)} {words(had)}; --resume "
                        f"continues it, so drop {flag(dest)} {words(asked)}")


def words(value):
    """An option's value as its command line spells it: widths 256,256, no widths none."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def print_metrics(m, keys=None, to=None):
    """The metrics of ``evaluate`` one per line, ``keys`` (default all) in order, and
    to a JSON file ``to``."""
    for k in keys or m:
        v = m[k]
        if isinstance(v, float):
            print(f"{k:>13}: {v:.6g}")
        elif isinstance(v, list) and v and isinstance(v[0], float):
            print(f"{k:>13}: " + ", ".join(f"{x:.4g}" for x in v))
        else:
            print(f"{k:>13}: {v}")
    if to:
        write_json(to, m)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def resume_from(a, fm, ckpt, steps):
    """With --resume: one line when the checkpoint has taken more than ``steps`` (the
    total), else say where it continues."""
    if not a.resume:
        return
    done = fm.state_.step
    if steps < done:
        raise FmnumpyError(f"{ckpt} has taken {done} steps already; --resume continues up to "
                           f"--steps, the total, so pass --steps of {done} or more")
    say(f"resuming from {ckpt} at step {done}")


def fit_timed(a, fm, data, steps, batch_size, ckpt, **more):
    """``fm.fit`` with ``train``'s run options (resume, progress bar, checkpoints); returns
    the seconds it took."""
    t0 = time.perf_counter()
    fm.fit(data, steps=steps, batch_size=batch_size, warm_start=bool(a.resume),
           progress=not a.no_progress, checkpoint=ckpt, checkpoint_every=a.checkpoint_every,
           log=say, **more)
    return time.perf_counter() - t0


def open_model(a, cls, make, keep=(), rename=None):
    """(model, checkpoint path) of ``train`` in OUT: with --resume the checkpoint's model,
    any model option given with another value refused (but ``threads`` and ``keep``),
    --threads applied; else ``make(a)``.  The pictures then draw with the model's seed."""
    fill(a, dict(checkpoint_every=1000))
    os.makedirs(a.out, exist_ok=True)
    ckpt = os.path.join(a.out, "checkpoint.npz")
    if a.resume:
        fm = cls.load(ckpt)
        resumed_conflicts(a, fm, ckpt, [k for k in fm.param_names()
                                        if k != "threads" and k not in keep], rename)
        fm.set_params(threads=a.threads)
    else:
        fm = make(a)
    fill(a, dict(seed=fm.seed))
    return fm, ckpt


def run_length(a, fm):
    """(steps, batch size) of ``train``: as given, else with --resume the checkpoint's,
    else the defaults of the family's ``fit``."""
    run = fit_defaults(type(fm))
    steps = a.steps if a.steps is not None else (
        fm.total_steps_ if a.resume and fm.total_steps_ else
        run["steps"] if run["steps"] is not None else fm.default_steps())
    batch = a.batch_size if a.batch_size is not None else (
        fm.batch_size_ if a.resume and fm.batch_size_ else run["batch_size"])
    return steps, batch
