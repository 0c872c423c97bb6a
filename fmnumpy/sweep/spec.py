"""A sweep's specification: a TOML file naming the family, fixed options, a grid and the
seeds; its runs are the Cartesian product of the grid times the seeds (docs/sweeps.md).

    family = "euclidean"          # or "manifold", "discrete", "sbi"
    seeds = [0, 1, 2]
    baseline = { hidden = "64,64" }       # optional: the ratios' reference (default: the
    [fixed]                               # grid's first values, the data's aside)
    steps = 2000
    [grid]
    dataset = ["2spirals", "moons"]
    hidden = ["64,64", "128,128"]

Options that change together go in named configurations, which multiply the grid like one
more key, ``config`` (its baseline: ``baseline = { config = "default" }``)::

    [configs.default]
    [configs.wide]
    hidden = "256,256,256"
    x-freqs = 0

Family "sbi" sweeps ``fmnumpy sbi train`` instead (posterior flows on a task's
simulations, docs/sbi.md): its keys are that command's options (task, simulations, steps,
batch-size).

Keys are ``fmnumpy train``'s long options (``batch-size`` or ``batch_size``); a value is
what the option takes (true/false for a flag; a list of widths for ``hidden`` is joined
with commas).  Each run is the train command line of its options: checked here by the
command line's own parser and family rules, so a spec that would fail there fails here,
in one line, before anything runs.
"""
import hashlib
import itertools
import json
import os
import tomllib
from collections import namedtuple

from fmnumpy.errors import FmnumpyError

FAMILIES = ("euclidean", "manifold", "discrete", "sbi")
# the options a sweep sets itself for every run
OWNED = ("out", "seed", "resume", "threads", "no_progress", "no_plots", "checkpoint_every")
SBI = "sbi"           # the family whose runs are ``fmnumpy sbi train``
PAIRED = ("dataset", "data")      # a ratio compares runs on the same data
CHECKPOINT_EVERY = 500      # steps between a run's checkpoints (what a crash can lose)

CONFIG = "config"     # the grid key of the named configurations

Spec = namedtuple("Spec", "family seeds fixed grid baseline flags configs")
"""configs: {name: options} of the named configurations ({} when none); flags: the train
options that are flags (true/false in the spec)."""
Cli = namedtuple("Cli", "build_parser family main")
"""The command line's parser, its family rule (the parsed train options -> a family) and
``main``, handed in by ``cli/main.py`` (the sweep does not import the command line)."""
Run = namedtuple("Run", "key config seed options")
"""key: the folder's name (a stable hash of family, options and seed); config: the grid
values (a tuple of (option, value)); options: every option of the run but the seed."""


def _dest(key):
    return str(key).replace("-", "_")


def _value(v):
    """A TOML value as the option's text: lists (widths) joined by commas."""
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return v


def command(family):
    """The command words of a run of ``family``."""
    return ["sbi", "train"] if family == SBI else ["train"]


def _train_dests(cli, family="euclidean"):
    """{dest: is a flag} of the options of ``family``'s train command."""
    import argparse
    train = cli.build_parser()
    for word in command(family):
        sub = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction))
        train = sub.choices[word]
    return {a.dest: a.nargs == 0 for a in train._actions if a.option_strings and a.dest != "help"}


def load_spec(path, cli):
    """The ``Spec`` of a TOML file, checked: a known family, seeds, a grid whose every key
    has at least one value, keys that are train options the sweep does not set itself."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise FmnumpyError(f"{path}: not valid TOML ({e})") from None
    return check_spec(raw, cli, str(path))


def check_spec(raw, cli, where="the spec"):
    unknown = sorted(set(raw) - {"family", "seeds", "fixed", "grid", "baseline", "configs"})
    if unknown:
        raise FmnumpyError(f"{where}: unknown key {unknown[0]!r}; a spec has family, seeds, "
                           "[fixed], [grid], [configs.NAME] and baseline")
    family = raw.get("family", "euclidean")
    if family not in FAMILIES:
        raise FmnumpyError(f"{where}: unknown family {family!r}; choose one of: "
                           + ", ".join(FAMILIES))
    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise FmnumpyError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    fixed = {_dest(k): _value(v) for k, v in dict(raw.get("fixed", {})).items()}
    grid = {}
    for k, vals in dict(raw.get("grid", {})).items():
        if not isinstance(vals, list) or not vals:
            raise FmnumpyError(f"{where}: grid key {k!r} needs a non-empty list of values, "
                               f"got {vals!r}")
        grid[_dest(k)] = [_value(v) for v in vals]
    named = {}
    for name, opts in dict(raw.get("configs", {})).items():
        if not isinstance(opts, dict):
            raise FmnumpyError(f"{where}: configs.{name} must be a table of options, got "
                               f"{opts!r}")
        named[name] = {_dest(k): _value(v) for k, v in opts.items()}
    if not grid and not named:
        raise FmnumpyError(f"{where}: the grid is empty; give [grid] at least one option "
                           "with a list of values (or [configs.NAME] tables)")
    if CONFIG in grid:
        raise FmnumpyError(f"{where}: {CONFIG!r} names the [configs.NAME] tables; it cannot "
                           "be a grid key")
    seen = {}
    for name, opts in named.items():
        same = seen.setdefault(json.dumps(opts, sort_keys=True), name)
        if same != name:
            raise FmnumpyError(f"{where}: configs {same!r} and {name!r} set the same options; "
                               "keep one")
        clash = sorted(set(opts) & (set(fixed) | set(grid)))
        if clash:
            raise FmnumpyError(f"{where}: configs.{name} sets {clash[0]!r}, which is also "
                               f"{'fixed' if clash[0] in fixed else 'in the grid'}; keep one")
    dests = _train_dests(cli, family)
    for k in list(fixed) + list(grid) + [k for opts in named.values() for k in opts]:
        if k in OWNED:
            raise FmnumpyError(f"{where}: {k!r} is set by the sweep for each run; drop it")
        if k not in dests:
            words = " ".join(command(family))
            raise FmnumpyError(f"{where}: unknown option {k!r}; the keys are fmnumpy {words}'s "
                               f"long options (fmnumpy {words} --help)")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise FmnumpyError(f"{where}: {both[0]!r} is both fixed and in the grid; keep one")
    axes = ({CONFIG: list(named)} if named else {}) | grid
    baseline = {_dest(k): _value(v) for k, v in dict(raw.get("baseline", {})).items()}
    for k, v in baseline.items():
        if k not in axes or v not in axes[k]:
            raise FmnumpyError(f"{where}: baseline {k} = {v!r} is not a value of the grid's "
                               f"{k!r}")
    # unnamed keys: their first value, except the data's, which pair the runs instead
    baseline = {k: baseline.get(k, axes[k][0]) for k in axes
                if k in baseline or k not in PAIRED}
    spec = Spec(family, list(seeds), fixed, grid, baseline,
                frozenset(k for k, flag in dests.items() if flag), named)
    for config in configs(spec):                # each combination's command line, once
        check_run(spec, Run("", config, seeds[0], options(spec, config)), cli)
    return spec


def axes(spec):
    """{key: values} the runs vary over: ``config`` (the named configurations) first, if
    any, then the grid's keys."""
    return ({CONFIG: list(spec.configs)} if spec.configs else {}) | spec.grid


def configs(spec):
    """Every combination of the axes, as a tuple of (key, value) in their order."""
    ax = axes(spec)
    return [tuple(zip(ax, vals)) for vals in itertools.product(*ax.values())]


def options(spec, config):
    """A combination's train options: the fixed ones, its named configuration's, its grid
    values."""
    config = dict(config)
    return dict(spec.fixed, **spec.configs.get(config.pop(CONFIG, None), {}), **config)


def run_key(family, options, seed):
    """The folder name of a run: 12 hex digits of SHA-1 of its canonical JSON."""
    text = json.dumps({"family": family, "options": options, "seed": seed}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def runs(spec):
    """Every run of the sweep: the grid's combinations times the seeds, seeds outermost."""
    out = []
    for seed in spec.seeds:
        for config in configs(spec):
            opts = options(spec, config)
            out.append(Run(run_key(spec.family, opts, seed), config, seed, opts))
    return out


def argv(spec, run, folder, threads):
    """``fmnumpy train``'s (or ``sbi train``'s) command line of ``run``, writing into
    ``folder``."""
    out = command(spec.family)
    for k, v in run.options.items():
        if k in spec.flags:
            if v not in (True, False):
                raise FmnumpyError(f"option {k!r} is a flag: give true or false, got {v!r}")
            if v:
                out.append("--" + k.replace("_", "-"))
        else:
            out += ["--" + k.replace("_", "-"), str(v)]
    if spec.family == "discrete" and "discrete" not in run.options:
        out.append("--discrete")
    out += ["--seed", str(run.seed), "--out", str(folder), "--no-progress",
            "--threads", str(threads)]
    if spec.family != SBI:
        out += ["--no-plots", "--checkpoint-every", str(CHECKPOINT_EVERY)]
    return out


def check_run(spec, run, cli):
    """Parse a run's command line as ``fmnumpy train`` would, and check that it trains the
    spec's family with options that family takes (one line otherwise)."""
    import contextlib
    import io
    from fmnumpy.cli import common
    line = argv(spec, run, os.devnull, 1)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            a = cli.build_parser().parse_args(line)
    except SystemExit:
        msg = (err.getvalue().strip().splitlines() or ["?"])[-1]
        raise FmnumpyError(f"run {dict(run.config)} seed {run.seed}: {msg}") from None
    if spec.family == SBI:                 # the task's name, before anything runs
        from fmnumpy.sbi.tasks import get_task
        get_task(a.task)
        return
    family = cli.family(a)
    if family != spec.family:
        raise FmnumpyError(f"the spec says family {spec.family!r}, but its options train "
                           f"{common.FAMILY_WORDS[family]}; set family = {family!r} or "
                           "change the options")
    common.refuse_others(a, family)
