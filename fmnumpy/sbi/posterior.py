"""Flow-matching posterior estimation (FMPE: Wildberger, Dax, Buchholz, Green, Macke,
Schoelkopf, NeurIPS 2023): a flow q(theta | x) trained by conditional flow matching on
simulated pairs (theta_i, x_i), the observation x as the network's continuous condition
(euclidean/conditions.py).

The parameters are standardized by the mean and standard deviation of the simulated
theta (z = (theta - m) / s); the flow models z | x, so

    log q(theta | x) = log q_z((theta - m) / s | x) - sum_d log s_d,

exact by the instantaneous change of variables (docs/likelihood.md).  Samples outside a
bounded prior's box are drawn again (the prior gives them no mass), as sbi does.
"""
import numpy as np

from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.euclidean.conditions import check_conditions
from fmnumpy.euclidean.estimator import FlowMatcher
from fmnumpy.sbi.tasks import get_task, in_prior

MAX_REDRAWS = 100         # rounds of redrawing samples outside the prior before giving up
STEPS_RANGE = (30_000, 100_000)   # fit_simulations(steps=None): the most steps, if it
                           # does not stop: one per simulation, within this range
                           # (bench/results/sbi.md, "The most steps")
VALIDATION_FRACTION = 0.1  # simulations held out for early stopping, as sbi's default
EVAL_EVERY = 1000          # the most steps between validation losses (eval_every=None: a
                           # tenth of the training pairs' count, at least 100)
PATIENCE = 5               # evaluations without a new best before the run stops
VALIDATION_DRAWS = 10      # (x0, t) draws per held-out pair
SPLIT_STREAM, VALIDATION_STREAM = 45, 46


def max_steps(n):
    """The most training steps of ``fit_simulations(steps=None)`` on n simulations: n,
    within ``STEPS_RANGE``.  The cosine schedule spans them, so the cap sets how fast the
    learning rate falls: at 10^5 simulations 100,000 steps beat 30,000, at 10^4 30,000
    beat 100,000 (which ran at a higher rate until early stopping)."""
    lo, hi = STEPS_RANGE
    return int(min(max(int(n), lo), hi))


class Validation:
    """The flow-matching loss of held-out pairs (z, x) with fixed draws: each pair with
    ``VALIDATION_DRAWS`` source points x0 and times t (the model's time law), so that
    evaluations differ only by the weights.  ``loss(model)`` uses the EMA weights."""

    def __init__(self, model, z, x):
        from fmnumpy.train.times import time_from_uniform
        R = VALIDATION_DRAWS
        rng = np.random.default_rng([model.seed, VALIDATION_STREAM])
        self.z, self.x = np.tile(z, (R, 1)), np.tile(x, (R, 1))
        self.x0 = rng.standard_normal(self.z.shape)
        self.t = time_from_uniform(rng.random(self.z.shape[0]), model.time_power)
        self.eps = rng.standard_normal(self.z.shape)

    def loss(self, model):
        from fmnumpy.euclidean.paths import NOISY, fill_path
        code, sigma = model.path_args()
        xt, ut = np.empty_like(self.z), np.empty_like(self.z)
        eps = self.eps if code in NOISY else self.eps[:0]
        fill_path(code, self.x0, self.z, self.t, sigma, eps, xt, ut)
        v = model.velocity(xt, self.t, condition=self.x)
        return float(np.mean((v - ut) ** 2))


class PosteriorFlow(FlowMatcher):
    """q(theta | x) by flow matching; ``FlowMatcher``'s options (x_freqs 0 by default: the
    parameters' plane waves were not measured to help here), trained with
    :meth:`fit_simulations`, sampled with :meth:`sample_posterior` and scored with
    :meth:`log_posterior`.  ``task``: a name of ``tasks.TASKS`` (kept in checkpoints, for
    the prior's box), or None."""

    def __init__(self, task=None, **options):
        options.setdefault("x_freqs", 0)
        super().__init__(**options)
        self.task = None if task is None else get_task(task).name
        self.theta_mean_ = self.theta_std_ = None
        self.simulations_ = None
        self.validation_ = []
        self.stopping_ = None       # early stopping's state: best loss and step, stale, stopped
        self.best_ema_ = None       # the EMA weights of the best evaluation

    @classmethod
    def param_names(cls):
        return ("task",) + tuple(FlowMatcher.param_names())

    def fit_simulations(self, theta, x, steps=None, batch_size=256,
                        validation_fraction=VALIDATION_FRACTION, eval_every=None,
                        patience=PATIENCE, **fit_options):
        """Train on simulated pairs theta (N, dim_theta), x (N, dim_x), up to ``steps``
        (None: :func:`max_steps` of N), stopping early: a ``validation_fraction`` of the
        pairs is held out, and every ``eval_every`` steps the EMA weights' flow-matching
        loss on them (:class:`Validation`) is taken; after ``patience`` evaluations without
        a new best the run ends, and the EMA weights are those of the best evaluation
        (``validation_`` holds (step, loss) of each).  validation_fraction=0: no
        held-out pairs, ``steps`` steps; eval_every=None: a tenth of the number of
        training pairs, from 100 to ``EVAL_EVERY`` steps.  ``fit``'s other options
        (progress, checkpoint, ...) pass through.  warm_start=True on a model loaded from
        a checkpoint continues its run on the same simulations, early stopping's state
        included (``stopping_``, ``best_ema_``), as if it had not been broken off; a run
        that stopped early takes no more steps.  Returns self."""
        theta = check_conditions(theta, np.shape(theta)[0], "theta")
        x = check_conditions(x, theta.shape[0], "x")
        n_val = int(round(float(validation_fraction) * theta.shape[0]))
        if not 0.0 <= float(validation_fraction) < 1.0:
            raise FmnumpyError(f"validation_fraction must be in [0, 1), got "
                               f"{validation_fraction}")
        if theta.shape[0] - n_val < int(batch_size):
            raise FmnumpyError(f"{theta.shape[0] - n_val} training simulations are fewer than "
                               f"a batch of {int(batch_size)}; simulate more or pass a smaller "
                               "batch_size")
        resumed = bool(fit_options.get("warm_start")) and self.state_ is not None
        if resumed and self.simulations_ not in (None, theta.shape[0]):
            raise FmnumpyError(f"resume on the same {self.simulations_} simulations as "
                               f"before, got {theta.shape[0]}")
        if not resumed:
            std = theta.std(axis=0)
            self.theta_mean_, self.theta_std_ = theta.mean(axis=0), np.where(std > 0, std, 1.0)
            self.validation_, self.stopping_, self.best_ema_ = [], None, None
        elif self.stopping_ is not None and self.stopping_["stopped"]:
            return self                                  # it stopped early: nothing to add
        self.simulations_ = theta.shape[0]
        z = (theta - self.theta_mean_) / self.theta_std_
        order = np.random.default_rng([self.seed, SPLIT_STREAM]).permutation(z.shape[0])
        held, kept = order[:n_val], order[n_val:]
        if n_val == 0:
            return self.fit(z, steps=steps, batch_size=batch_size, conditions=x,
                            **fit_options)
        val = Validation(self, z[held], x[held])
        if eval_every is None:
            eval_every = min(EVAL_EVERY, max(100, kept.shape[0] // 10))
        if self.stopping_ is None:
            self.stopping_ = {"loss": np.inf, "step": 0, "stale": 0, "stopped": False}

        def evaluate(model, k):
            loss = val.loss(model)
            best = self.stopping_
            self.validation_.append((k, loss))
            if loss < best["loss"]:
                best.update(loss=loss, step=k, stale=0)
                self.best_ema_ = model.ema_.copy()
            else:
                best["stale"] += 1
            best["stopped"] = best["stale"] >= patience
            return best["stopped"]

        steps = max_steps(theta.shape[0]) if steps is None else steps
        self.fit(z[kept], steps=steps, batch_size=batch_size,
                 conditions=x[kept], callback=evaluate,
                 callback_every=positive_int("eval_every", eval_every), **fit_options)
        if self.best_ema_ is not None and (self.stopping_["stopped"] or self.step_ >= steps):
            self.ema_ = self.best_ema_           # the run ended (not broken off by until)
        return self

    def _observation(self, x_obs):
        self._check_fitted()
        x = np.asarray(x_obs, dtype=np.float64).reshape(-1)
        return check_conditions(x.reshape(1, -1), 1, "the observation",
                                self.spec_.n_cond)[0]

    def sample_posterior(self, x_obs, n=10_000, seed=0, method=None, steps=None,
                         return_logprob=False):
        """n samples of q(theta | x_obs) (n, dim_theta), inside the prior's box (others
        drawn again); with ``return_logprob`` also their log q(theta | x_obs) (n,) from
        the same solve."""
        x = self._observation(x_obs)
        n = positive_int("the number of samples", n)
        task = None if self.task is None else get_task(self.task)
        kept, logps = [], []
        have, rng = 0, np.random.default_rng([int(seed), 42])
        for _ in range(MAX_REDRAWS):
            z0 = rng.standard_normal((n - have, self.spec_.dim))
            out = self.sample(x0=z0, method=method, steps=steps, condition=x,
                              return_logprob=return_logprob)
            z, lz = out if return_logprob else (out, None)
            theta = z * self.theta_std_ + self.theta_mean_
            ok = np.ones(theta.shape[0], bool) if task is None else in_prior(task, theta)
            kept.append(theta[ok])
            if lz is not None:
                logps.append(lz[ok] - np.log(self.theta_std_).sum())
            have += int(ok.sum())
            if have == n:
                break
        else:
            raise FmnumpyError(f"fewer than {n} of the posterior's samples fell inside the "
                               f"prior after {MAX_REDRAWS} rounds; the flow puts its mass "
                               "outside the prior")
        theta = np.concatenate(kept)
        return (theta, np.concatenate(logps)) if return_logprob else theta

    def log_posterior(self, theta, x_obs, method="rk4", steps=100, dtype="float32"):
        """log q(theta | x_obs) (N,) of parameters theta (N, dim_theta): the flow's exact
        density of the standardized theta, less sum log s (not renormalized to the prior's
        box)."""
        x = self._observation(x_obs)
        theta = check_conditions(theta, np.shape(theta)[0], "theta", self.spec_.dim)
        z = (theta - self.theta_mean_) / self.theta_std_
        return (self.log_prob(z, method=method, steps=steps, dtype=dtype, condition=x)
                - np.log(self.theta_std_).sum())

    def _extra_meta(self):
        return {"theta_mean": self.theta_mean_.tolist(), "theta_std": self.theta_std_.tolist(),
                "simulations": self.simulations_, "stopping": self.stopping_,
                "validation": [list(v) for v in self.validation_]}

    def _load_extra(self, extra):
        self.theta_mean_ = np.asarray(extra["theta_mean"])
        self.theta_std_ = np.asarray(extra["theta_std"])
        self.simulations_ = extra.get("simulations")
        self.stopping_ = extra.get("stopping")
        self.validation_ = [tuple(v) for v in extra.get("validation", [])]

    def _checkpoint_extra(self):
        extra, arrays = super()._checkpoint_extra()
        if self.best_ema_ is not None:
            arrays["best_ema"] = self.best_ema_
        return extra, arrays

    def _restore_extra(self, meta, arrays, path):
        super()._restore_extra(meta, arrays, path)
        self.best_ema_ = np.array(arrays["best_ema"]) if "best_ema" in arrays else None


def held_out_loss(q):
    """The best held-out flow-matching loss of a posterior flow's early stopping."""
    if not q.validation_:
        raise FmnumpyError("this posterior flow has no held-out loss (trained with "
                           "validation_fraction=0)")
    return min(loss for _, loss in q.validation_)


def select_posterior(flows):
    """(the flow of lowest held-out loss, [each one's held-out loss]) of posterior flows
    trained on the same simulations with the same seed, so that their held-out pairs and
    (x0, t) draws are the same and the losses compare (the time law and path must be
    shared too).  To choose options by the simulations alone:

        flows = [PosteriorFlow(task=t, seed=0, weight_decay=w).fit_simulations(theta, x)
                 for w in (0.0, 1.0)]
        q, losses = select_posterior(flows)

    On sbibm's gaussian_linear and slcp at 10^3 simulations weight_decay=1 lowered both
    the held-out loss and the posterior's error; on the 2-D tasks and at 10^4 it raised
    both (docs/sbi.md, "Choosing by held-out loss")."""
    if not flows:
        raise FmnumpyError("select_posterior needs at least one posterior flow")
    shared = ("seed", "time_power", "path", "sigma", "sigma_min", "simulations_")
    for q in flows[1:]:
        for name in shared:
            if getattr(q, name) != getattr(flows[0], name):
                raise FmnumpyError(f"the flows differ in {name.rstrip('_')} "
                                   f"({getattr(flows[0], name)} and {getattr(q, name)}), so "
                                   "their held-out losses do not compare")
    losses = [held_out_loss(q) for q in flows]
    return flows[int(np.argmin(losses))], losses
