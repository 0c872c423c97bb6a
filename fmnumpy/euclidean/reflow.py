"""Reflow (Liu et al. 2023, "Flow straight and fast"; ``docs/reflow.md``).

A trained flow Z = FlowMatcher maps noise x0 to data.  Integrating it from
fixed noise X0 gives pairs (X0, X1 = Z(X0)); training a new flow on the
straight paths between *these* pairs ("reflow") gives a flow whose
trajectories are straighter, so that few Euler steps sample well.  The
coupling is the pairs themselves: a batch takes whole rows (X0[i], X1[i]).

Dimension letters: N pairs, B batch, D data dimension, C steps per RNG chunk.

- ``make_pairs(fm, n)``: (X0, X1) with X1 the model's sample from X0.
- ``PairStream``: the training batches drawn from fixed pairs, with the
  counter-based RNG of ``train.BatchStream``.
- ``reflow(fm, ...)``: a new ``FlowMatcher`` trained on the pairs.
- ``compare(before, after, draw)``: straightness and few-step W2 of both.

The ``fmnumpy reflow`` command (``cli.py``) runs these three.
"""
import numpy as np

from fmnumpy.euclidean import stream as _stream
from fmnumpy.euclidean.estimator import DEFAULTS, FlowMatcher
from fmnumpy import config
from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.train.optim import AdamConfig

PAIRS = 20000                 # default number of pairs of the command
EULER_STEPS = (1, 2, 4)       # few-step samplers that compare() scores
REF_METHOD, REF_STEPS = "rk4", 100    # the accurate sampler, for reference
EVAL_X0_STREAM = 10           # purpose tags of compare()'s draws: prior,
EVAL_DATA_STREAM = 9          # fresh data (as `fmnumpy evaluate`)
INITS = ("model", "random")


# ---- pairs ---------------------------------------------------------------------------

def make_pairs(fm, n, method=REF_METHOD, steps=REF_STEPS, seed=0):
    """(X0, X1), both (n, D) ``DTYPE``: X0 ~ N(0, I) from ``default_rng(seed)``
    and X1 = the flow of ``fm`` from X0 at t = 1 (``fm.sample(x0=X0)``, EMA
    weights): the coupling (X0, Z_1(X0)) that reflow trains on."""
    fm._check_fitted()
    n = positive_int("the number of pairs", n)
    x0 = np.random.default_rng(seed).standard_normal((n, fm.spec_.dim)).astype(DTYPE)
    x1 = fm.sample(x0=x0, method=method, steps=steps)
    return x0, np.ascontiguousarray(x1, dtype=DTYPE)


class PairStream(_stream.BatchStream):
    """(x0, x1, t) for step k from fixed pairs: rows i (B,) uniform over the N
    pairs (with replacement), x0 = X0[i], x1 = X1[i], t (B,) =
    paths.time_from_uniform(u, time_power) of u ~ U(0, 1) (time_power 1: t = u).

    The draws of steps [k C, (k+1) C) come from ``default_rng([seed, 1, k])``
    as in ``BatchStream``, so the batch of a step depends on (seed, step) only.
    ``rows`` (C, B) holds the row indices of the current chunk.
    """

    def __init__(self, X0, X1, batch, seed, dtype=DTYPE, time_power=1.0):
        X0, X1 = np.asarray(X0), np.asarray(X1)
        if X0.ndim != 2 or X0.shape != X1.shape or X0.shape[0] == 0:
            raise FmnumpyError(f"pairs must be two non-empty (N, D) arrays of the same "
                               f"shape, got {X0.shape} and {X1.shape}")
        super().__init__(None, X0.shape[1], positive_int("batch size", batch), seed, dtype,
                         time_power=time_power)
        self.X0 = np.ascontiguousarray(X0, dtype=dtype)       # (N, D)
        self.X1 = np.ascontiguousarray(X1, dtype=dtype)       # (N, D)

    def _fill(self, k):
        C, B, N = config.DATA_CHUNK_STEPS, self.batch, self.X0.shape[0]
        rng = np.random.default_rng([self.seed, _stream.TRAIN_STREAM, k])
        self.rows = rng.integers(0, N, size=(C, B))               # (C, B)
        self.x0 = self.X0[self.rows]                              # (C, B, D)
        self.x1 = self.X1[self.rows]                              # (C, B, D)
        self.t = self._times(rng)                                 # (C, B)
        self.chunk = k


# ---- the reflowed model ----------------------------------------------------------------

class ReflowedMatcher(FlowMatcher):
    """A FlowMatcher that also remembers how it was reflowed, in ``reflow_``
    (a dict, or None for a model trained on data).  It is saved in the
    checkpoint's ``extra`` metadata, which ``FlowMatcher.load`` ignores, so a
    reflow checkpoint loads as a plain FlowMatcher too."""

    reflow_ = None

    def _extra_meta(self):
        extra = super()._extra_meta()
        if self.reflow_ is not None:
            extra["reflow"] = self.reflow_
        return extra

    def _load_extra(self, extra):
        super()._load_extra(extra)
        self.reflow_ = extra.get("reflow")


def source_data(fm):
    """The dataset name the chain of flows leading to ``fm`` was trained on,
    or None (an in-memory array, or unknown)."""
    info = getattr(fm, "reflow_", None)
    data = info.get("data") if fm.data_ == "reflow" and info else fm.data_
    return None if data in (None, "array", "reflow") else data


def reflow(fm, n_pairs=PAIRS, steps=None, batch_size=None, seed=0, method=REF_METHOD,
           pair_steps=REF_STEPS, init="model", pairs=None, threads=None, log=None,
           time_power=1.0, **fit_kwargs):
    """A new flow trained on the pairs of ``fm`` (Liu et al. 2023, reflow).

    The new model has ``fm``'s configuration (``get_params``: network, optimizer,
    sigma_min) on the straight path with the independent coupling: its batches
    are rows of the pairs (``PairStream``), its loss the usual CFM loss on the
    straight path from X0[i] to X1[i] with fresh t, drawn with ``time_power``
    (1: uniform, as Liu et al.; recorded in the new model, as its stream draws it).

    n_pairs: pairs drawn by ``make_pairs(fm, n_pairs, method, pair_steps, seed)``
    (or pass ``pairs=(X0, X1)``; then pair_method and pair_steps are recorded as
    None).  steps, batch_size: default ``fm``'s
    (``DEFAULTS`` if unknown).  seed: of the pairs, the init and the batches.
    init: "model" starts from ``fm``'s EMA weights (fine-tuning), "random"
    from a fresh initialisation.  fit_kwargs go to ``train.run`` (progress,
    callback, callback_every, checkpoint, checkpoint_every, until).
    Returns a ``ReflowedMatcher`` with ``data_ = "reflow"``.
    """
    fm._check_fitted()
    if init not in INITS:
        raise FmnumpyError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    steps = positive_int("steps", steps if steps is not None else
                          (fm.total_steps_ or DEFAULTS["steps"]))
    batch_size = positive_int("batch size", batch_size if batch_size is not None else
                               (fm.batch_size_ or DEFAULTS["batch_size"]))
    new = ReflowedMatcher(**dict(fm.get_params(), seed=seed, threads=threads, device="cpu",
                                 path="straight", sb_sigma=DEFAULTS["sb_sigma"],
                                 coupling="independent", coupling_options=None,
                                 time_power=time_power))
    new.opt = AdamConfig.from_dict(fm.opt.to_dict())          # betas and eps too
    made = pairs is None
    if made:
        if log:
            log(f"drawing {n_pairs} pairs with {method} {pair_steps} steps")
        pairs = make_pairs(fm, n_pairs, method=method, steps=pair_steps, seed=seed)
    X0, X1 = pairs
    stream = PairStream(X0, X1, batch_size, seed, DTYPE, time_power=new.time_power)
    if stream.dim != fm.spec_.dim:
        raise FmnumpyError(f"the pairs have D={stream.dim}, the model D={fm.spec_.dim}")
    # the state FlowMatcher.fit sets up before train.run
    new._init_state(fm.spec_.dim)
    if init == "model":
        new.theta_ = fm.ema_
        new.ema_ = fm.ema_
    new.batch_size_, new.total_steps_, new.data_ = batch_size, steps, "reflow"
    prev = getattr(fm, "reflow_", None) if fm.data_ == "reflow" else None
    new.reflow_ = dict(data=source_data(fm), generation=(prev or {}).get("generation", 1) + 1,
                       pairs=int(stream.X0.shape[0]), pair_method=method if made else None,
                       pair_steps=int(pair_steps) if made else None, init=init)
    with new.threads_scope():                  # the stepper picks its threads inside
        return new._run(new._stepper(stream, batch_size), stream, steps, **fit_kwargs)


# ---- before and after ------------------------------------------------------------------

def _scores(fm, x0, fresh):
    """Straightness from x0 and W2 of the Euler samples from x0 to ``fresh``
    (or, without data, to the model's own rk4 samples from the same x0)."""
    from fmnumpy.metrics import straightness, w2
    ref = fm.sample(x0=x0, method=REF_METHOD, steps=REF_STEPS)           # (n, D)
    target = ref if fresh is None else fresh
    out = dict(straightness=straightness(fm.velocity, x0, steps=REF_STEPS), w2={})
    for k in EULER_STEPS:
        out["w2"][f"euler_{k}"] = w2(fm.sample(x0=x0, method="euler", steps=k), target)
    if fresh is not None:
        out["w2"][f"{REF_METHOD}_{REF_STEPS}"] = w2(ref, fresh)
    return out


def compare(fm_before, fm_after, data_draw, n=2000, seed=0):
    """{"before": scores, "after": scores, "reference", "n", "seed"}, where
    scores = {"straightness": S, "w2": {"euler_1", "euler_2", "euler_4"[, "rk4_100"]}}.

    Both models start from the same x0 (n, D) ~ N(0, I) (``default_rng([seed, 10])``).
    S is ``metrics.straightness`` (100 Euler steps).  With ``data_draw`` (a
    ``draw(n, rng)``) W2 is the exact W2 to n fresh draws (``default_rng([seed, 9])``)
    at 1, 2, 4 Euler steps and for rk4 with 100 steps; with ``data_draw=None``
    it is the W2 between each model's Euler samples and its own rk4-100 samples
    from the same x0 (0 for a perfectly straight flow).
    """
    n = positive_int("the number of evaluation points", n)
    if n < 2:
        raise FmnumpyError(f"the number of evaluation points must be at least 2, got {n}")
    dim = fm_before.spec_.dim
    if fm_after.spec_.dim != dim:
        raise FmnumpyError(f"the models have D={dim} and D={fm_after.spec_.dim}")
    x0 = np.random.default_rng([seed, EVAL_X0_STREAM]).standard_normal((n, dim))
    x0 = x0.astype(DTYPE)                                                 # (n, D)
    fresh = None
    if data_draw is not None:
        fresh = np.asarray(data_draw(n, np.random.default_rng([seed, EVAL_DATA_STREAM])))
    return dict(before=_scores(fm_before, x0, fresh), after=_scores(fm_after, x0, fresh),
                reference="data" if fresh is not None else f"{REF_METHOD}_{REF_STEPS}",
                n=n, seed=int(seed))


def format_table(result):
    """The compare() dict as a small text table (one row per score)."""
    rows = [("straightness", "straightness")]
    against = ("fresh data" if result["reference"] == "data"
               else f"own {REF_METHOD} {REF_STEPS}-step samples")
    for key in result["before"]["w2"]:
        method, k = key.rsplit("_", 1)
        rows.append((f"W2 {method} {k} step{'s' if k != '1' else ''}", key))
    lines = [f"{'':<20}{'before':>10}{'after':>10}"]
    for label, key in rows:
        b, a = ((r["straightness"] if key == "straightness" else r["w2"][key])
                for r in (result["before"], result["after"]))
        lines.append(f"{label:<20}{b:>10.4f}{a:>10.4f}")
    lines.append(f"(W2 to {against}, n = {result['n']})")
    return "\n".join(lines)
