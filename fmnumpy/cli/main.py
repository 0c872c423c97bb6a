"""The ``fmnumpy`` command: train, sample, animate, evaluate, density, reflow.

One command line per family: ``train`` picks the family from --manifold, --discrete,
a manifold --dataset or the checkpoint it resumes; the other commands from the family
of their --checkpoint.  Each family's module (``cli/euclidean.py``, ``manifold.py``,
``discrete.py``) owns its options and reads its defaults off its estimator; an option
of another family is refused in one line (``cli/common.py``).

Every user mistake ends in one line on stderr saying what is wrong and what to
do, and a non-zero exit code (2 for bad input, 130 for Ctrl-C); no traceback.
"""
import argparse
import os
import sys

from fmnumpy.cli import common
from fmnumpy.cli.common import PROG, say
from fmnumpy.errors import FmnumpyError
from fmnumpy.manifold.presets import PRESETS
from fmnumpy.ode.solvers import METHODS


def _hidden(text):
    try:
        widths = tuple(int(h) for h in str(text).split(",") if h.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 256,256,256, "
                                         f"got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def _by_family(name, fit=False):
    """"euclidean A, manifold B, discrete C": the families' defaults of a parameter (of
    fit with ``fit=True``), for the help text."""
    from fmnumpy import FAMILIES
    out = []
    for fam, cls in FAMILIES.items():
        d = common.fit_defaults(cls) if fit else cls.default_params()
        if name in d:
            v = d[name]
            if v is None and name == "steps" and fit:     # set by the configuration
                v = cls.STEPS_HELP
            v = ",".join(map(str, v)) if isinstance(v, tuple) else v
            out.append(f"{fam} {v}")
    return "default: " + ", ".join(out)


def _sampling_args(p, adaptive=False, sde=False):
    p.add_argument("--checkpoint", required=True, help="checkpoint .npz written by train")
    p.add_argument("-n", "--n", type=int, default=None, help="number of samples")
    p.add_argument("--method", default=None, choices=METHODS + (("dopri5",) if adaptive else ())
                   + (("sde",) if sde else ()) + ("jump",),
                   help="ODE solver (default: the model's, rk4; a flow map's: jump)"
                   + ("; sde: stochastic sampling on R^D (docs/sde.md)" if sde else "")
                   + "; jump: --steps jumps of a flow map (docs/flow_maps.md)")
    if adaptive:
        p.add_argument("--rtol", type=float, default=None, help="dopri5 relative tolerance "
                       "(default 1e-5)")
        p.add_argument("--atol", type=float, default=None, help="dopri5 absolute tolerance "
                       "(default 1e-5)")
    p.add_argument("--steps", type=int, default=None,
                   help="solver steps from t=0 to t=1 (default: the model's, 100; a flow "
                   "map's jumps: 2)")
    p.add_argument("--seed", type=int, default=None, help="seed of the source draw (default 1)")
    p.add_argument("--threads", type=int, default=None, help="at most this many CPU threads")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="flow matching on R^D: cpu (default) or cuda")


def _train_parser(sub):
    t = sub.add_parser(
        "train", help="train a model and write checkpoint and pictures",
        description="Train on a toy dataset or your own data; writes checkpoint.npz, "
        "samples.npy, pictures and metrics.json to --out.  The family is flow matching on "
        "R^D unless --manifold or --discrete says otherwise; each family has its own "
        "defaults (shown as 'euclidean A, manifold B, discrete C') and refuses the options "
        "of the others in one line.")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--dataset", default=None, help="toy dataset name (default: the "
                     "family's: 2spirals, vmf or wrapped_gmm, discrete_checkerboard)")
    src.add_argument("--data", default=None, help="your data: a .npy or .csv file of "
                     "shape (N, D)")
    fam = t.add_argument_group("families")
    fam.add_argument("--manifold", default=None, choices=("euclidean", "sphere", "torus"),
                     help="flow matching on the sphere (unit vectors) or the flat torus "
                     "(angles) (docs/manifolds.md); implied by a manifold --dataset")
    fam.add_argument("--latlon", action="store_true", default=None,
                     help="--data FILE holds latitude,longitude in degrees (a header row and "
                     "# comments allowed): points on the sphere S^2")
    fam.add_argument("--preset", default=None, choices=sorted(PRESETS),
                     help="manifold settings chosen on validation data (earth: the event "
                     "catalogues, bench/results/earth_select.md); options given override them")
    fam.add_argument("--discrete", action="store_true", default=None,
                     help="discrete flow matching on integer tokens (docs/discrete.md)")
    run = t.add_argument_group("the run (every family)")
    run.add_argument("--steps", type=int, default=None, help="training steps in total ("
                     + _by_family("steps", fit=True) + "; with --resume the checkpoint's)")
    run.add_argument("--batch-size", type=int, default=None,
                     help=_by_family("batch_size", fit=True) + "; with --resume the checkpoint's")
    run.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    run.add_argument("--out", default="results", help="output folder (default %(default)s)")
    run.add_argument("--resume", action="store_true", default=None,
                     help="continue from OUT/checkpoint.npz up to --steps")
    run.add_argument("--checkpoint-every", type=int, default=None,
                     help="steps between checkpoints (default 1000)")
    run.add_argument("--snapshot-every", type=int, default=None,
                     help="steps between scatter snapshots (default steps/10, 0 = none)")
    run.add_argument("--threads", type=int, default=None,
                     help="at most this many CPU threads (Numba's and BLAS's)")
    run.add_argument("--no-progress", action="store_true", default=None,
                     help="no progress bar")
    run.add_argument("--no-plots", action="store_true", default=None,
                     help="skip the pictures")
    net = t.add_argument_group("the network and its update (every family)")
    net.add_argument("--hidden", type=_hidden, default=None,
                     help="hidden widths, comma-separated (" + _by_family("hidden") + ")")
    net.add_argument("--activation", default=None, help="silu, relu, selu or tanh "
                     "(default silu)")
    net.add_argument("--time-freqs", type=int, default=None,
                     help="sinusoidal time-embedding frequencies, 0 = raw t (default 0)")
    net.add_argument("--lr", type=float, default=None,
                     help="peak learning rate (" + _by_family("lr") + ")")
    net.add_argument("--optimizer", default=None, choices=("adam", "adamw"),
                     help=_by_family("optimizer"))
    net.add_argument("--weight-decay", type=float, default=None, help="(default 0)")
    net.add_argument("--clip", type=float, default=None, help="clip the gradient norm at "
                     "this value, 0 = off (" + _by_family("clip") + ")")
    net.add_argument("--warmup", type=int, default=None, help="linear learning-rate "
                     "warm-up steps (" + _by_family("warmup") + ")")
    net.add_argument("--schedule", default=None, choices=("constant", "cosine"),
                     help=_by_family("schedule"))
    net.add_argument("--lr-min", type=float, default=None,
                     help="the cosine schedule's last rate (" + _by_family("lr_min") + ")")
    net.add_argument("--ema-decay", type=float, default=None,
                     help="EMA of the weights used for sampling (default 0.999)")
    cont = t.add_argument_group("flow matching on R^D and on manifolds")
    cont.add_argument("--x-freqs", type=int, default=None, help="Fourier features of the "
                      "point: K octaves of plane waves (R^D: see --x-dirs; the sphere: "
                      "along the axes and diagonals), the "
                      "torus harmonics 1..K+1 (default: 3 on the CPU, 0 on the GPU; 2 on a "
                      "manifold)")
    cont.add_argument("--x-dirs", default=None, choices=("auto", "diagonals", "axes"),
                      help="R^D: the plane waves' directions: the axes and diagonals, or the "
                      "axes alone (default auto: the diagonals up to 8 dimensions)")
    cont.add_argument("--time-power", type=float, default=None,
                      help="draw training times t = 1 - (1 - u)^K, u uniform: 1 is uniform, "
                      "K > 1 trains more near the data (default 2 on the straight path and "
                      "on manifolds, 1 on the other paths)")
    cont.add_argument("--coupling", default=None,
                      help="pairing of source and data in a batch: independent (default), ot "
                      "(exact minibatch optimal transport) or, on R^D, sinkhorn")
    euc = t.add_argument_group("flow matching on R^D")
    euc.add_argument("--source", default=None, help="where x0 comes from: a toy dataset name "
                     "or a .npy/.csv file (default N(0, I)); with --discrete: mask (default) "
                     "or uniform")
    euc.add_argument("--sigma", type=float, default=None,
                     help="constant width of the straight path, xt = (1-t) x0 + t x1 + "
                     "sigma eps (TorchCFM's I-CFM / OT-CFM sigma; default 0)")
    lab = euc.add_mutually_exclusive_group()
    lab.add_argument("--conditional", action="store_true", default=None,
                     help="train on the toy set's labels (mode, arm, moon, ring, circle) for "
                     "classifier-free guidance")
    lab.add_argument("--label-column", type=int, default=None,
                     help="with --data FILE: column K holds integer class labels")
    lab.add_argument("--condition-columns", default=None, metavar="K,K,...",
                     help="with --data FILE: these columns are a continuous condition c; "
                     "the model learns p(x | c) (docs/conditions.md)")
    euc.add_argument("--condition-embedding", type=_hidden, default=None, metavar="H,...,E",
                     help="with --condition-columns: the condition enters through a small "
                     "MLP of these widths, the last its output (default: none)")
    euc.add_argument("--label-dropout", type=float, default=None,
                     help="fraction of labels replaced by the null class (default 0.1)")
    euc.add_argument("--sigma-min", type=float, default=None,
                     help="Lipman's sigma_min of the straight path (default 0)")
    euc.add_argument("--path", default=None,
                     help="probability path: straight (default), cosine (variance "
                     "preserving) or sb (Schrodinger bridge)")
    euc.add_argument("--sb-sigma", type=float, default=None,
                     help="noise of --path sb (default 0.5)")
    euc.add_argument("--sinkhorn-reg", type=float, default=None,
                     help="entropic regularisation of --coupling sinkhorn (default 0.05)")
    euc.add_argument("--metrics-every", type=int, default=None,
                     help="every N steps, sample 1000 points (RK4, 20 steps) and log W2, MMD "
                     "and energy distance to fresh data, also to OUT/metrics_log.jsonl")
    euc.add_argument("--device", default=None, choices=("cpu", "cuda"),
                     help="cpu (default) or cuda")
    euc.add_argument("--objective", default=None, choices=("fm", "meanflow", "shortcut"),
                     help="fm: the velocity (default); meanflow or shortcut: a flow map, "
                     "sampled in a few jumps (docs/flow_maps.md)")
    euc.add_argument("--map-fraction", type=float, default=None,
                     help="the share of each batch on the map's target (default 0.25)")
    euc.add_argument("--adaptive-power", type=float, default=None,
                     help="p of MeanFlow's loss weight 1 / (err^2 + c)^p (default 0: off)")
    dis = t.add_argument_group("discrete flow matching (--discrete)")
    dis.add_argument("--vocab-size", type=int, default=None,
                     help="tokens are 0 .. V-1 (default 128)")
    dis.add_argument("--kappa-power", type=float, default=None,
                     help="the scheduler kappa_t = t^n (default 1)")
    dis.add_argument("--embed", type=int, default=None,
                     help="width of the token embedding (default 32)")
    return t


def build_parser():
    from fmnumpy import __version__
    from fmnumpy.euclidean.datasets import DATASETS
    from fmnumpy.euclidean.reflow import INITS, PAIRS
    ap = argparse.ArgumentParser(
        prog=PROG, description="Flow matching from scratch: train a velocity field v(x, t) "
        "on a path from noise x0 ~ N(0, I) to data x1 (by default the straight path "
        "xt = (1-t) x0 + t x1), then sample by integrating dx/dt = v(x, t) from t=0 to t=1; "
        "on R^D, on the sphere and the torus, and on discrete tokens.",
        epilog="toy datasets on R^D: " + ", ".join(DATASETS))
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(sub)

    s = sub.add_parser("sample", help="draw samples from a checkpoint into a .npy file")
    _sampling_args(s, adaptive=True, sde=True)
    s.add_argument("--noise", type=float, default=None, help="--method sde: the diffusion "
                   "g(t)^2 = noise^2 sigma_t (default 1; 0 is Euler; docs/sde.md)")
    s.add_argument("--log-prob", default=None, help="also write log p of each sample "
                   "(exact divergence) to this .npy file")
    s.add_argument("--out", required=True, help="output .npy file")
    s.add_argument("--plot", default=None, help="also write a picture of the samples here")
    s.add_argument("--label", type=int, default=None,
                   help="conditional model: sample this class (default: the whole "
                   "distribution)")
    s.add_argument("--condition", default=None, metavar="C,C,...",
                   help="a model of continuous conditions: sample p(x | c) of these numbers "
                   "(default: the null condition)")
    s.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w (default 1)")
    s.add_argument("--qmc", action="store_true", default=None, help="quasi-random "
                   "(scrambled Sobol) source points: an even sample set, not independent draws")

    a = sub.add_parser("animate", help="write a GIF of particles flowing from noise to data")
    _sampling_args(a)
    a.add_argument("--out", required=True, help="output .gif file")
    a.add_argument("--frames", type=int, default=None, help="frames (default 50)")
    a.add_argument("--fps", type=int, default=None, help="frames per second (default 20)")

    e = sub.add_parser("evaluate", help="print sample-quality metrics of a checkpoint",
                       description="Draw samples from a checkpoint and compare them with "
                       "fresh data: on R^D exact W2, MMD, energy distance, NFE and "
                       "straightness; on a manifold geodesic W2 against its floor and the "
                       "log-likelihood; discrete: TV against its floor and the ELBO.")
    _sampling_args(e)
    esrc = e.add_mutually_exclusive_group()
    esrc.add_argument("--dataset", default=None, help="compare with this toy dataset "
                      "(default: the one the checkpoint was trained on)")
    esrc.add_argument("--data", default=None, help="compare with rows of this .npy/.csv file")
    e.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    e.add_argument("--qmc", action="store_true", default=None,
                   help="quasi-random source points for the samples (as sample --qmc)")

    d = sub.add_parser("density", help="map of the model's exact density (R^2, S^2, T^2)",
                       description="Score a grid of points by the exact log-likelihood "
                       "(reverse solve with the forward-mode divergence) and draw p(x).")
    d.add_argument("--checkpoint", required=True, help="checkpoint .npz written by train")
    d.add_argument("--out", required=True, help="output .png file")
    d.add_argument("--grid", type=int, default=None, help="grid points per axis (default 80)")
    d.add_argument("--lim", type=float, default=None, help="R^2: half-width of the square "
                   "(default 4)")
    d.add_argument("--steps", type=int, default=None, help="RK4 steps of the reverse solve "
                   "(default 20)")
    d.add_argument("--threads", type=int, default=None, help="at most this many CPU threads")

    r = sub.add_parser(
        "reflow", help="straighten a trained flow on R^D by reflow (fewer sampling steps)",
        description="Reflow (Liu et al. 2023): draw pairs (x0, x1) by integrating the "
        "checkpoint's flow from noise, train a new flow on the straight paths between "
        "these pairs, and compare the two: straightness and W2 at 1, 2 and 4 Euler "
        "steps.  Writes OUT/checkpoint.npz and OUT/reflow.json.")
    r.add_argument("--checkpoint", required=True, help="checkpoint .npz to straighten")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--pairs", type=int, default=PAIRS,
                   help="number of (x0, x1) pairs (default %(default)s)")
    r.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the checkpoint's total steps)")
    r.add_argument("--batch-size", type=int, default=None,
                   help="batch size (default: the checkpoint's)")
    r.add_argument("--init", default="model", choices=INITS,
                   help="start from the checkpoint's weights or from scratch "
                   "(default %(default)s)")
    r.add_argument("--eval-n", type=int, default=2000,
                   help="points for the before/after comparison (default %(default)s)")
    r.add_argument("--seed", type=int, default=0, help="seed of the pairs, the "
                   "initialisation and the batches (default %(default)s)")
    r.add_argument("--threads", type=int, default=None, help="at most this many CPU threads")
    r.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    w = sub.add_parser("sweep", help="run a grid of train runs on Dask (docs/sweeps.md)",
                       description="Train every combination of a TOML spec's grid and seeds, "
                       "each run one Dask task in a folder of its own (finished runs are "
                       "skipped, interrupted ones resumed), then summarise them.")
    w.add_argument("spec", nargs="?", default=None, help="the sweep's TOML spec")
    w.add_argument("--out", default=None, help="the sweep's folder")
    w.add_argument("--scheduler", default=None, help="address of a running Dask scheduler "
                   "(default: a local cluster)")
    w.add_argument("--workers", type=int, default=2, help="local cluster: worker processes "
                   "(default %(default)s)")
    w.add_argument("--threads-per-run", type=int, default=1, help="Numba's and BLAS's threads "
                   "in each run (default %(default)s)")
    w.add_argument("--summary", default=None, metavar="DIR",
                   help="remake DIR's summary from its run folders, and run nothing")
    _sbi_parser(sub)
    return ap


def _sbi_parser(sub):
    """``fmnumpy sbi train | sample``: posterior estimation on the sbibm tasks (docs/sbi.md)."""
    b = sub.add_parser("sbi", help="simulation-based inference: train a posterior flow on a "
                       "task's simulations, sample it (docs/sbi.md)")
    bs = b.add_subparsers(dest="sbi_command")
    t = bs.add_parser("train", help="simulate, train q(theta | x), draw its pair plot")
    t.add_argument("--task", default=None, help="two_moons, gaussian_linear, "
                   "gaussian_mixture, slcp, bernoulli_glm or bernoulli_glm_raw (needed "
                   "unless --resume)")
    t.add_argument("--simulations", type=int, default=None,
                   help="simulations to train on (default 10000)")
    t.add_argument("--steps", type=int, default=None, help="training steps (default: "
                   "early stopping on a held-out tenth, at most one per simulation within "
                   "30000-100000)")
    t.add_argument("--condition-embedding", type=_hidden, default=None, metavar="H,...,E",
                   help="the observation enters through a small MLP of these widths, the "
                   "last its output, for long observations (default: none)")
    t.add_argument("--weight-decay", default=None, metavar="W[,W...]", help="AdamW's "
                   "weight decay; several: train one posterior each and keep the one of "
                   "lowest held-out loss (e.g. 0,1; default 0)")
    t.add_argument("--batch-size", type=int, default=None, help="(default 256)")
    t.add_argument("--seed", type=int, default=None, help="(default 0)")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--resume", action="store_true", help="continue the run in OUT's "
                   "checkpoint (written every 1000 steps and on Ctrl-C), early stopping "
                   "included; the options not given are the checkpoint's")
    t.add_argument("--no-progress", action="store_true")
    p = bs.add_parser("sample", help="posterior samples of an observation")
    p.add_argument("--checkpoint", required=True)
    obs = p.add_mutually_exclusive_group(required=True)
    obs.add_argument("--x", default=None, metavar="X,X,...", help="the observation")
    obs.add_argument("--true-seed", type=int, default=None,
                     help="simulate the observation of parameters drawn from the prior")
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="output .npy file")
    p.add_argument("--log-prob", default=None, help="also write log q(theta | x) here")
    p.add_argument("--plot", default=None, help="also draw the pair plot here (.png)")


def _family(a):
    """The family a command is for: ``train``'s from its flags (or the checkpoint it
    resumes), the others' from their --checkpoint's."""
    from fmnumpy.manifold.datasets import DATASETS as MANIFOLD_SETS
    from fmnumpy.train.checkpoint import load_checkpoint
    from fmnumpy.train.estimator import checkpoint_family
    if a.command == "train":
        if a.discrete and (a.manifold not in (None, "euclidean") or a.dataset in MANIFOLD_SETS):
            raise FmnumpyError("--discrete and --manifold are two kinds of flow matching; "
                               "pick one")
        ckpt = os.path.join(a.out, "checkpoint.npz")
        if a.resume and os.path.isfile(ckpt):
            family = checkpoint_family(load_checkpoint(ckpt)[0])
            asked = ("discrete" if a.discrete else "manifold" if a.manifold in
                     ("sphere", "torus") else "euclidean" if a.manifold else None)
            if asked is not None and asked != family:
                raise FmnumpyError(f"{ckpt} holds a model of {common.FAMILY_WORDS[family]}; "
                                   f"--resume continues it, so drop the other family's flag")
            return family
        if a.discrete:
            return "discrete"
        if a.manifold in ("sphere", "torus") or (a.manifold is None
                                                 and (a.dataset in MANIFOLD_SETS or a.latlon)):
            return "manifold"
        return "euclidean"
    ckpt = getattr(a, "checkpoint", None)
    return checkpoint_family(load_checkpoint(ckpt)[0]) if ckpt else "euclidean"


def _command(a):
    """The function of ``a.command`` for its family, the others' options refused."""
    from fmnumpy.cli import discrete, euclidean, manifold
    family = _family(a)
    common.refuse_others(a, family)
    module = {"euclidean": euclidean, "manifold": manifold, "discrete": discrete}[family]
    return module.COMMANDS[a.command]


def sweep_cli():
    """What a sweep needs of the command line (``sweep.spec.Cli``)."""
    from fmnumpy.sweep.spec import Cli
    return Cli(build_parser, _family, main)


def main(argv=None):
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.command is None:
        ap.print_help()
        return 2
    try:
        if a.command == "sweep":                     # runs of any family: its own module
            from fmnumpy.cli.sweep import cmd_sweep
            return cmd_sweep(a, sweep_cli())
        if a.command == "sbi":
            from fmnumpy.cli.sbi import cmd_sbi
            return cmd_sbi(a)
        return _command(a)(a)
    except FmnumpyError as e:
        say(f"{PROG} {a.command}: error: {e}")
        return 2
    except KeyboardInterrupt:
        say(f"{PROG} {a.command}: interrupted")
        return 130
    except OSError as e:
        say(f"{PROG} {a.command}: error: {e.strerror or e} "
            f"({getattr(e, 'filename', '') or ''}); check the path and permissions")
        return 2


if __name__ == "__main__":
    sys.exit(main())
