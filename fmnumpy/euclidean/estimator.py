"""``FlowMatcher``: the scikit-learn-style front door.

    fm = FlowMatcher(hidden=(256, 256, 256), activation="silu", seed=0)
    fm.fit("2spirals", steps=20000, batch_size=256)
    x = fm.sample(2000, method="rk4", steps=100, seed=1)      # (2000, 2)
    fm.save("model.npz");  fm = FlowMatcher.load("model.npz")

The defaults here are the command line's defaults (``DEFAULTS``).
"""

import math

import numpy as np

from fmnumpy.euclidean import datasets
from fmnumpy.euclidean import likelihood as _lik
from fmnumpy.euclidean.conditions import (ConditionedData, Standardizer, check_conditions,
                                          conditional_ot)
from fmnumpy.config import DTYPE
from fmnumpy.couplings.registry import get_coupling
from fmnumpy.errors import FmnumpyError, positive_int, positive_ints
from fmnumpy.nn.mlp import MLPSpec
from fmnumpy.train.estimator import Estimator, check_threads, positive_steps, within_threads
from fmnumpy.euclidean.paths import (GAUSS, NOISY, SB, SB_SIGMA, STRAIGHT, check_sb_sigma,
    path_code)
from fmnumpy.train.times import check_time_power
from fmnumpy.euclidean.sampling import solver
from fmnumpy.train.state import EMA, GRAD, M, THETA, V, TrainState
from fmnumpy.euclidean.step import CpuStepper, EmbeddedStepper
from fmnumpy.euclidean import stream as _stream

INIT_STREAM = 0
SDE_STREAM = 31          # the Brownian increments of sample(method="sde")

# One table of defaults for the API and the CLI.
# t = 1 - (1 - u)^K (paths.time_from_uniform).  time_power=None picks K by path: 2 on the
# straight path (more training times near the data; on 2spirals it lowered the W2 of each
# of 3 seeds), 1 (uniform) on the others, whose targets are not smooth near t = 1 (the
# bridge's noise term grows like 1 / sqrt(1 - t)); docs/flow_matching.md#time-sampling
TIME_POWER = {"straight": 2.0, "cosine": 1.0, "sb": 1.0}
# x_freqs=None: Fourier features of x on the CPU (bench/results/recipe.md), none on
# the GPU: its kernels have them but have not been timed with them on a GPU yet
X_FREQS = {"cpu": 3, "cuda": 0}
# hidden 4 x 128 and lr 4e-3: paired against 3 x 128 at 2e-3 on the eight FFJORD sets,
# better on rings every seed by 0.3 of the floor, never worse beyond the seed spread
# (bench/results/recipe_deep.md)

DEFAULTS = dict(
    dataset="2spirals", steps=20000, batch_size=256, hidden=(128, 128, 128, 128),
    activation="silu", time_freqs=0, x_freqs=None, x_dirs="auto", lr=4e-3, weight_decay=0.0, optimizer="adamw",
    clip=1.0, ema_decay=0.999, warmup=500, schedule="cosine", lr_min=1e-5,
    sigma_min=0.0, sigma=0.0, seed=0, method="rk4", sample_steps=100, n_samples=2000,
    coupling="independent", path="straight", sb_sigma=SB_SIGMA, time_power=None,
    label_dropout=0.1, objective="fm", map_fraction=0.25, adaptive_power=0.0,
    map_teacher=True, map_time_power=None, condition_beta=10.0, condition_embedding=(),
    jumps=2, marginal="data",
)
# marginal: what sample() of a conditional model draws when given no labels or condition:
# "data" draws them from the training data's own, "null" samples the null condition
# (bench/results/conditions.md)
MARGINALS = ("data", "null")
MARGINAL_STREAM = 47     # the labels or conditions drawn by sample(marginal="data")
# fit(steps=None): 20,000 steps (DEFAULTS["steps"]) for the velocity, MAP_STEPS for a flow
# map: 30,000 met the one- and two-jump aims on the mean of 3 seeds of every FFJORD set, at
# 1.4x to 1.7x the plain default's training time (bench/results/flowmap.md)
MAP_STEPS = 30000
# adaptive_power: the power p of MeanFlow's adaptive loss weight; p = 1 (the paper's choice
# for images) was worse than the plain mean square (p = 0) on every set measured
# (bench/results/flowmap_options.md)


def default_x_freqs(dim, device):
    """x_freqs=None: plane-wave features of x (``X_FREQS`` of the device) up to
    ``config.FOURIER_UP_TO`` dimensions, none above, where they cost time and lose
    quality (bench/results/x_freqs_dims.md)."""
    from fmnumpy.config import FOURIER_UP_TO
    return X_FREQS[device] if dim <= FOURIER_UP_TO else 0


def _labelled(data):
    """``data`` as a labelled ``datasets.Data`` when it has labels (a labelled Data, or
    the name of a toy set with labels), else None."""
    if isinstance(data, datasets.Data):
        return data if data.n_classes else None
    if isinstance(data, str) and data in datasets.CLASSES:
        return datasets.as_data(data, True)
    return None


def _same_source(a, b):
    """Whether two sources (``datasets.Data`` or None for N(0, I)) are one distribution:
    the same name, and for arrays the same rows."""
    if a is None or b is None:
        return a is b
    if a.name != b.name:
        return False
    return a.array is None or b.array is None or np.array_equal(a.array, b.array)


def _row(i, doc):
    """A property: row i of the training state (a view); assigning copies into it."""
    def get(self):
        return self.state_.buf[i]

    def put(self, value):
        self.state_.buf[i] = value
    return property(get, put, doc=doc)


class FlowMatcher(Estimator):
    """A flow-matching model: MLP velocity field v(x, t), trained with the
    conditional flow-matching loss on a probability path: ``path="straight"``
    (xt = (1 - t) x0 + t x1, widened by ``sigma_min``), ``"cosine"`` (variance
    preserving) or ``"sb"`` (Schrodinger bridge with noise ``sb_sigma``);
    see docs/couplings.md#paths.

    The constructor's arguments are the configuration (``get_params`` /
    ``set_params``, as in scikit-learn).  Fitted attributes end with an
    underscore: ``state_`` the ``state.TrainState`` (parameters, gradient, Adam
    moments and EMA in one (5, P) buffer, steps taken, losses), with the views
    ``theta_`` (P,) parameters, ``ema_`` their moving average (used for sampling),
    ``m_``/``v_`` Adam moments, ``dtheta_``; ``step_`` steps taken, ``losses_`` the
    loss of every step, ``spec_`` the network's shape.
    """

    FAMILY = "euclidean"
    STEPS_HELP = f"{DEFAULTS['steps']} ({MAP_STEPS} for a flow map)"     # fit(steps=None)

    def __init__(self, hidden=DEFAULTS["hidden"], activation=DEFAULTS["activation"],
                 time_freqs=DEFAULTS["time_freqs"], x_freqs=DEFAULTS["x_freqs"],
                 x_dirs=DEFAULTS["x_dirs"],
                 lr=DEFAULTS["lr"],
                 optimizer=DEFAULTS["optimizer"], weight_decay=DEFAULTS["weight_decay"],
                 clip=DEFAULTS["clip"], ema_decay=DEFAULTS["ema_decay"],
                 warmup=DEFAULTS["warmup"], schedule=DEFAULTS["schedule"],
                 lr_min=DEFAULTS["lr_min"], sigma_min=DEFAULTS["sigma_min"],
                 sigma=DEFAULTS["sigma"], coupling=DEFAULTS["coupling"], coupling_options=None,
                 path=DEFAULTS["path"], sb_sigma=DEFAULTS["sb_sigma"],
                 time_power=DEFAULTS["time_power"], label_dropout=DEFAULTS["label_dropout"],
                 objective=DEFAULTS["objective"], map_fraction=DEFAULTS["map_fraction"],
                 adaptive_power=DEFAULTS["adaptive_power"], map_teacher=DEFAULTS["map_teacher"],
                 map_time_power=DEFAULTS["map_time_power"],
                 condition_beta=DEFAULTS["condition_beta"],
                 condition_embedding=DEFAULTS["condition_embedding"],
                 seed=DEFAULTS["seed"], threads=None, device="cpu"):
        params = dict(locals())
        del params["self"]
        self._configure(**params)
        self.spec_ = None
        self.state_ = None
        self.source_ = None
        self.cond_ = None

    # -- configuration ----------------------------------------------------------------
    def _configure(self, hidden, activation, time_freqs, x_freqs, x_dirs, lr, optimizer, weight_decay, clip,
                   ema_decay, warmup, schedule, lr_min, sigma_min, sigma, coupling,
                   coupling_options, path, sb_sigma, time_power, label_dropout, objective,
                   map_fraction, adaptive_power, map_teacher, map_time_power, condition_beta,
                   condition_embedding, seed, threads, device):
        """Validate and set the configuration (the constructor's arguments; set_params
        validates on a fresh model, so a bad value leaves the model as it was)."""
        threads = check_threads(threads)
        sigma_min = float(sigma_min)
        if not 0.0 <= sigma_min < 1.0:
            raise FmnumpyError(f"sigma_min must be in [0, 1), got {sigma_min}")
        path_code(path)                                            # validate early
        path = str(path).lower()
        if path != "straight" and sigma_min != 0.0:
            raise FmnumpyError(f"sigma_min is a parameter of the straight path only; the "
                               f"{path} path takes sigma_min=0 (got {sigma_min})")
        given = sigma
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            sigma = math.nan
        if not (math.isfinite(sigma) and sigma >= 0.0):
            raise FmnumpyError(f"sigma, the constant width of the straight path, must be 0 "
                               f"(none) or a positive finite number, got {given!r}")
        if sigma > 0.0 and (path != "straight" or sigma_min != 0.0):
            raise FmnumpyError(f"sigma widens the straight path with sigma_min=0 (got path "
                               f"{path}, sigma_min {sigma_min}); use one of sigma_min "
                               "(Lipman's narrowing path) or sigma (constant width)")
        sb_sigma = check_sb_sigma(sb_sigma)
        try:
            label_dropout = float(label_dropout)
        except (TypeError, ValueError):
            label_dropout = math.nan
        if not 0.0 <= label_dropout < 1.0:
            raise FmnumpyError(f"label_dropout must be in [0, 1) (the fraction of labels "
                               f"replaced by the null class), got {label_dropout}")
        time_power = check_time_power(TIME_POWER[path] if time_power is None else time_power)
        coupling_options = dict(coupling_options or {})
        get_coupling(str(coupling), **coupling_options)            # validate early
        if device not in ("cpu", "cuda"):
            raise FmnumpyError(f"unknown device {device!r}; choose one of: cpu, cuda")
        objective, map_fraction, adaptive_power = self._check_objective(
            objective, map_fraction, adaptive_power, path, sigma_min, sigma)
        x_freqs = None if x_freqs is None else int(x_freqs)
        hidden = tuple(int(h) for h in hidden)
        MLPSpec(2, hidden, activation, int(time_freqs), x_freqs=x_freqs or 0,
                x_dirs=x_dirs)                                     # validate early
        self.hidden, self.activation, self.time_freqs = hidden, activation, int(time_freqs)
        self.x_freqs, self.x_dirs = x_freqs, x_dirs
        self._configure_update(lr, optimizer, weight_decay, clip, warmup, schedule, lr_min,
                               ema_decay)
        self.sigma_min, self.sigma, self.path, self.sb_sigma = sigma_min, sigma, path, sb_sigma
        self.time_power, self.label_dropout = time_power, label_dropout
        self.coupling, self.coupling_options = str(coupling), coupling_options
        self.objective, self.map_fraction = objective, map_fraction
        self.adaptive_power, self.map_teacher = adaptive_power, bool(map_teacher)
        self.map_time_power = (None if map_time_power is None
                               else check_time_power(map_time_power))
        from fmnumpy.errors import positive_finite
        self.condition_beta = positive_finite("condition_beta", condition_beta)
        self.condition_embedding = positive_ints("condition_embedding", condition_embedding)
        self.device, self.seed, self.threads = device, int(seed), threads

    @staticmethod
    def _check_objective(objective, map_fraction, adaptive_power, path, sigma_min, sigma):
        """(objective, map_fraction, adaptive_power) checked: a flow map (meanflow,
        shortcut; flowmap.py) trains on the straight path (on the CPU: ``fit``)."""
        from fmnumpy.euclidean.flowmap import objective_code
        from fmnumpy.errors import positive_finite
        objective = str(objective).lower()
        objective_code(objective)
        try:
            map_fraction = float(map_fraction)
        except (TypeError, ValueError):
            map_fraction = math.nan
        if not 0.0 < map_fraction <= 1.0:
            raise FmnumpyError(f"map_fraction (the share of each batch on the map's target) "
                               f"must be in (0, 1], got {map_fraction}")
        adaptive_power = (0.0 if adaptive_power == 0 else
                          positive_finite("adaptive_power", adaptive_power, " (0: off)"))
        if objective != "fm":
            if path != "straight" or sigma_min != 0.0 or sigma != 0.0:
                raise FmnumpyError(f"objective {objective!r} trains on the straight path with "
                                   f"sigma_min=0 and sigma=0 (got path {path}, sigma_min "
                                   f"{sigma_min}, sigma {sigma})")
        return objective, map_fraction, adaptive_power
    # -- state ------------------------------------------------------------------------
    def _init_state(self, dim, n_classes=0, x_freqs=None, x_dirs=None, cond=None):
        """A fresh state for data of dimension ``dim``; ``x_freqs`` and ``x_dirs`` (a
        checkpoint's) override the configured ones, whose None means ``X_FREQS`` of the
        device, and whose "auto" the directions by dimension (``mlp.direction_scheme``);
        ``cond``: the ``conditions.Standardizer`` of a continuous condition, or None."""
        if x_freqs is None:
            x_freqs = default_x_freqs(dim, self.device) if self.x_freqs is None else self.x_freqs
        self.spec_ = MLPSpec(dim, self.hidden, self.activation, self.time_freqs, n_classes,
                             x_freqs, x_dirs or self.x_dirs, flow_map=self.objective != "fm",
                             n_cond=0 if cond is None else cond.width,
                             embed=() if cond is None else self.condition_embedding)
        self.cond_ = cond
        self.class_freq_ = None          # (K,) the training labels' frequencies
        self.cond_rows_ = None           # (N, K) the training conditions
        rng = np.random.default_rng([self.seed, INIT_STREAM])
        self.state_ = TrainState(self.spec_.init_params(rng, DTYPE))
        self.source_ = None
        self.total_steps_ = None
        self.batch_size_ = None
        self.data_ = None

    theta_ = _row(THETA, "parameters (P,)")
    dtheta_ = _row(GRAD, "last gradient (P,)")
    m_ = _row(M, "Adam's first moment (P,)")
    v_ = _row(V, "Adam's second moment (P,)")
    ema_ = _row(EMA, "EMA of the parameters (P,)")
    step_ = property(lambda self: 0 if self.state_ is None else self.state_.step,
                     doc="steps taken")
    losses_ = property(lambda self: self.state_.losses, doc="the loss of every step")
    train_seconds_ = property(lambda self: self.state_.seconds, doc="seconds of training")
    dim_ = property(lambda self: None if self.spec_ is None else self.spec_.dim,
                    doc="the data dimension D")

    def require_device(self):
        """Raise one line when the model is on ``device="cuda"`` and no GPU can be
        used; returns self."""
        if self.device == "cuda":
            from fmnumpy.euclidean.cuda import require_gpu
            require_gpu()
        return self

    def path_args(self):
        """(code, sigma) of the training path for ``paths.fill_path``: sigma is
        sigma_min on the straight path (or, with ``sigma`` > 0, the constant-width
        path GAUSS), sb_sigma on the bridge, unused by cosine."""
        code = path_code(self.path)
        if code == STRAIGHT and self.sigma > 0.0:
            return GAUSS, self.sigma
        return code, {STRAIGHT: self.sigma_min, SB: self.sb_sigma}.get(code, 0.0)

    # -- training ---------------------------------------------------------------------
    @within_threads
    def fit(self, data=DEFAULTS["dataset"], steps=None,
            batch_size=DEFAULTS["batch_size"], warm_start=False, until=None,
            progress=False, callback=None, callback_every=0, checkpoint=None,
            checkpoint_every=0, log=None, source=None, labels=None, conditions=None):
        """Train on ``data`` (a dataset name, an (N, D) array, a .npy/.csv path or a
        ``datasets.Data``) for ``steps`` steps in total (None: :meth:`default_steps`).

        source: where x0 comes from: None for N(0, I), or a distribution given like
        ``data`` (x0 is then drawn from it every step, couplings included); the
        model keeps it, ``sample`` draws from it and checkpoints store it.
        labels: None (unconditional), True (a toy set's own labels: the mode of
        8gaussians, the arm of 2spirals and pinwheel, the moon, the ring, the
        circle) or (N,) integer labels of an array; the label enters the network
        as a one-hot with a null class, dropped to null with probability
        ``label_dropout`` for classifier-free guidance (docs/guidance.md).
        conditions: instead of labels, (N, K) real numbers, one row per row of an array
        of data: the model learns p(x | c) (conditions.py, docs/conditions.md), the
        condition dropped to the null one with probability ``label_dropout``; with
        coupling "exact_ot" the pairs are conditional OT's (``condition_beta``).

        warm_start=True continues a fitted or loaded model up to ``steps``
        (the same batch size is required, so the data stream continues exactly);
        ``until`` stops early at that step (the schedule still spans ``steps``).
        progress: True for a tqdm bar, or a bar factory (see ``train.run``);
        callback(model, k) runs every ``callback_every`` steps.
        """
        steps, batch_size = positive_steps(self.default_steps() if steps is None else steps,
                                           batch_size)
        data = datasets.as_data(data, labels)
        C = self._check_conditions(data, conditions, labels)
        if self.objective != "fm" and self.device != "cpu":
            raise FmnumpyError(f"objective {self.objective!r} trains on the CPU (the GPU has "
                               f"the jump sampler, not the map's training step): fit with "
                               f"device='cpu', then sample with device='cuda'")
        if self.objective != "fm" and data.n_classes:
            raise FmnumpyError(f"objective {self.objective!r} trains an unconditional flow "
                               f"map; labels are available with objective 'fm'")
        src = None if source is None else datasets.as_data(source)
        if src is not None and src.dim != data.dim:
            raise FmnumpyError(f"the source has D={src.dim} and the data D={data.dim}; give "
                               "a source of the data's dimension")
        if warm_start and self.spec_ is not None and source is None:
            src = self.source_                      # continue from the model's own source
        elif warm_start and self.spec_ is not None and not _same_source(src, self.source_):
            had = "N(0, I)" if self.source_ is None else repr(self.source_.name)
            raise FmnumpyError(f"this model was trained from the source {had}; warm_start "
                               "continues it, so leave source out (or train a new model)")
        if self._continues(warm_start, steps, batch_size):
            if self.spec_.dim != data.dim:
                raise FmnumpyError(f"the model was trained on D={self.spec_.dim} data, "
                                   f"this data has D={data.dim}")
            if self.spec_.n_classes != data.n_classes:
                raise FmnumpyError(f"the model was trained with {self.spec_.n_classes} "
                                   f"classes, these data have {data.n_classes}; continue "
                                   "with the same labels")
            if self.spec_.n_cond != (0 if C is None else C.shape[1]):
                raise FmnumpyError(f"the model was trained with conditions of "
                                   f"{self.spec_.n_cond} numbers, these have "
                                   f"{0 if C is None else C.shape[1]}; continue with the same")
        else:
            self._init_state(data.dim, data.n_classes,
                             cond=None if C is None else Standardizer.fit(C))
        self.batch_size_, self.total_steps_, self.data_ = batch_size, steps, data.name
        self.source_ = src
        self._keep_marginal(data, C)
        labeled, coupling = None, self._coupling()
        if self.spec_.n_classes:
            labeled = data.draw_labeled
        elif C is not None:                           # the standardizer kept from the start
            labeled = ConditionedData(data, self.cond_.block(C)).draw
            coupling = None if coupling is None else conditional_ot(self.condition_beta)
        stream = _stream.BatchStream(data.draw, data.dim, batch_size, self.seed, DTYPE,
                                    coupling=coupling, time_power=self.time_power,
                                    source=None if src is None else src.draw,
                                    labeled=labeled, label_dropout=self.label_dropout,
                                    null_class=self.spec_.null_class)
        return self._run(self._stepper(stream, batch_size, data.name), stream, steps, until,
                         progress, callback, callback_every, checkpoint, checkpoint_every, log)

    def _keep_marginal(self, data, C):
        """Keep what ``sample(marginal="data")`` draws from: the training labels'
        frequencies (a toy set's from 100,000 labelled draws), or the conditions."""
        if self.spec_.n_classes:
            if data.labels is not None:
                y = data.labels
            else:
                y = data.draw_labeled(100_000, np.random.default_rng([self.seed, 48]))[1]
            self.class_freq_ = np.bincount(y, minlength=self.spec_.n_classes) / y.shape[0]
        if C is not None:
            self.cond_rows_ = np.asarray(C, dtype=np.float32)

    def _marginal(self, labels, condition, n, seed, marginal):
        """(labels, condition) of ``sample``: as given, or, for a conditional model given
        neither and ``marginal`` "data", n of the training data's own drawn with
        ``default_rng([seed, MARGINAL_STREAM])``."""
        marginal = DEFAULTS["marginal"] if marginal is None else str(marginal)
        if marginal not in MARGINALS:
            raise FmnumpyError(f"marginal must be one of: {', '.join(MARGINALS)}; got "
                               f"{marginal!r}")
        sp = self.spec_
        if labels is not None or condition is not None or marginal == "null" \
                or not (sp.n_classes or sp.n_cond):
            return labels, condition
        rng = np.random.default_rng([int(seed), MARGINAL_STREAM])
        if sp.n_classes:
            if self.class_freq_ is None:           # a checkpoint from before: uniform
                return rng.integers(0, sp.n_classes, size=n), None
            return rng.choice(sp.n_classes, size=n, p=self.class_freq_), None
        return None, self.cond_rows_[rng.integers(0, self.cond_rows_.shape[0], size=n)]

    def _check_conditions(self, data, conditions, labels):
        """The training conditions (N, K) float64 checked against the data and the
        options, or None; one line for what does not go together."""
        if conditions is None:
            if self.condition_embedding:
                raise FmnumpyError("condition_embedding embeds a continuous condition; pass "
                                   "conditions=, or leave condition_embedding out")
            return None
        if labels is not None and labels is not False:
            raise FmnumpyError("give labels or conditions, not both")
        if data.array is None:
            raise FmnumpyError(f"conditions go with an array of data, one row each; "
                               f"{data.name!r} is a named distribution")
        if self.objective != "fm":
            raise FmnumpyError(f"objective {self.objective!r} trains an unconditional flow "
                               f"map; conditions are available with objective 'fm'")
        if self.device != "cpu":
            raise FmnumpyError("a model with continuous conditions trains and samples on the "
                               "CPU; use device='cpu'")
        if self.coupling not in ("independent", "exact_ot"):
            raise FmnumpyError(f"with conditions the coupling is 'independent' or 'exact_ot' "
                               f"(conditional OT), not {self.coupling!r}")
        return check_conditions(conditions, data.array.shape[0])

    def _stepper(self, stream, batch_size, data_name=None):
        """The stepper of ``self.device`` for batches of ``stream``."""
        path = self.path_args()
        if self.objective != "fm":
            from fmnumpy.euclidean.flowmap import MapStepper
            return MapStepper(self.spec_, self.opt, self.objective, self.map_fraction,
                              self.adaptive_power, batch_size,
                              self.time_power if self.map_time_power is None
                              else self.map_time_power, self.seed, self.map_teacher)
        noise = _stream.PathNoise(path[0] in NOISY, self.spec_.dim, batch_size, self.seed,
                                 DTYPE)
        if self.device == "cuda":
            from fmnumpy.euclidean.cuda import cuda_stepper
            host = (self.source_ is not None or self.coupling != "independent"
                    or path[0] in NOISY or self.spec_.n_classes > 0)
            return cuda_stepper(self.spec_, self.opt, self.state_, batch_size, path,
                                stream, data_name == "2spirals" and self.spec_.dim == 2
                                and not host, self.seed, self.time_power, host, noise)
        if self.spec_.embed:
            return EmbeddedStepper(self.spec_, self.opt, path, batch_size, noise)
        return CpuStepper(self.spec_, self.opt, path, batch_size, noise)

    def _coupling(self):
        """The minibatch coupling of (x0, x1), or None for independent pairs."""
        if self.coupling == "independent":
            return None
        return get_coupling(self.coupling, **self.coupling_options)

    # -- sampling ---------------------------------------------------------------------
    @within_threads
    def velocity(self, x, t, ema=True, labels=None, condition=None):
        """v(x, t) for x (N, D) and a scalar t (or (N,) array) -> (N, D); a conditional
        model takes ``labels`` (an int or (N,)) or ``condition`` (K numbers or (N, K)),
        by default the null one."""
        from fmnumpy.nn.mlp import Workspace, condition_features, velocity
        self._check_fitted()
        x = np.ascontiguousarray(x, dtype=DTYPE)
        tt = np.broadcast_to(np.asarray(t, dtype=DTYPE), (x.shape[0],)).copy()
        ws = Workspace(self.spec_.sizes, x.shape[0])
        y, _ = self._labels(labels, x.shape[0], 1.0, condition, ema)
        if self.spec_.n_classes or self.spec_.n_cond:
            condition_features(self._null(x.shape[0]) if y is None else y,
                               self.spec_.label_offset, ws.X)
        theta = self.ema_ if ema else self.theta_
        return velocity(theta, self.spec_.sizes, self.spec_.kind, self.spec_.feats, x, tt,
                        ws.X, ws.A, ws.Z).copy()

    def draw_source(self, n, rng, qmc=False):
        """n points (n, D) of the model's source: N(0, I), or the distribution
        given to ``fit(source=...)``; ``qmc=True``: quasi-random N(0, I) points
        (``quasi.sobol_normal``; the N(0, I) source only)."""
        self._check_fitted()
        if qmc:
            if self.source_ is not None:
                raise FmnumpyError(f"qmc=True draws the N(0, I) source quasi-randomly; this "
                                   f"model transports from {self.source_.name!r}")
            from fmnumpy.euclidean.quasi import sobol_normal
            return sobol_normal(n, self.spec_.dim, rng)
        if self.source_ is None:
            return rng.standard_normal((n, self.spec_.dim))
        return self.source_.draw(n, rng)

    def _check_unconditional(self):
        if self.spec_.n_classes:
            raise FmnumpyError("density_grid draws the density of a model without labels; "
                               "for a labelled one call log_prob(points, labels=k)")

    def _check_gaussian_source(self):
        if self.source_ is not None:
            raise FmnumpyError(f"log-probabilities need the N(0, I) source, whose density "
                               f"is known; this model transports from {self.source_.name!r}")

    def _labels(self, labels, n, guidance, condition=None, ema=True):
        """(y or None, w) checked against the model: labels (n,) int64 of a labelled model
        (an int for all, or (n,)), or the block (n, K + 1) of a continuous condition (K
        numbers for all, or (n, K)), through the embedding of the ``ema`` or the raw weights
        when the model has one (:meth:`_embedded`); a finite guidance weight."""
        w = float(guidance) if np.isscalar(guidance) else math.nan
        if not math.isfinite(w):
            raise FmnumpyError(f"guidance must be a finite number, got {guidance!r}")
        if self.spec_.n_cond and self.device != "cpu":
            raise FmnumpyError("a model with continuous conditions samples on the CPU; "
                               "set_params(device='cpu')")
        if condition is not None:
            if labels is not None:
                raise FmnumpyError("give labels or a condition, not both")
            if not self.spec_.n_cond:
                raise FmnumpyError("this model was trained without conditions; drop "
                                   "condition= or train with conditions")
            return self._embedded(self.cond_.condition_block(condition, n), ema), w
        if labels is None:
            return None, w
        K = self.spec_.n_classes
        if self.spec_.n_cond:
            raise FmnumpyError(f"this model takes a condition of {self.spec_.n_cond} numbers "
                               "(condition=), not labels")
        if not K:
            raise FmnumpyError("this model is unconditional (trained without labels); drop "
                               "labels= or train with labels")
        y = np.full(n, labels) if np.ndim(labels) == 0 else np.asarray(labels)
        y = datasets.check_labels(y, n, "sample")
        if y.max() >= K:
            raise FmnumpyError(f"label {int(y.max())} is not a class of this model, which "
                               f"was trained on the classes 0..{K - 1}")
        return y, w

    def _embedded(self, y, ema):
        """The block [f e(c), f] (n, E + 1) the network sees for condition blocks y = [c, f]
        (n, K + 1), e the condition's embedding (mlp.embed_forward); y itself without one."""
        from fmnumpy.nn.mlp import Workspace, embed_forward
        sp = self.spec_
        if not sp.embed:
            return y
        theta = self.ema_ if ema else self.theta_
        ws = Workspace(sp.embed_sizes, y.shape[0])
        out = np.empty((y.shape[0], sp.cond_width + 1), dtype=DTYPE)
        return embed_forward(theta[sp.n_net_params:], sp.embed_sizes, sp.kind,
                             np.ascontiguousarray(y, dtype=DTYPE), ws.X, ws.A, ws.Z[:0], out)

    def _null(self, n):
        """The null condition of n points (``integrate.conditioning``'s): the null
        class, or the zero block."""
        from fmnumpy.euclidean.integrate import conditioning
        return conditioning(self.spec_, n)[0]

    def _solve(self, x0, method, steps, rtol, atol, record, ema, t0=0.0, t1=1.0,
               labels=None, guidance=1.0, condition=None):
        """(x(t1), trajectory or None) from x0 (n, D) with the registry's solver of
        ``method`` on ``self.device``, conditioned on ``labels`` or ``condition`` with
        ``guidance``."""
        s = solver(method, self.device)
        x0 = np.asarray(x0, dtype=DTYPE)
        if x0.ndim != 2 or x0.shape[1] != self.spec_.dim:
            raise FmnumpyError(f"x0 must have shape (n, {self.spec_.dim}), got {x0.shape}")
        y, w = self._labels(labels, x0.shape[0], guidance, condition, ema)
        theta = self.ema_ if ema else self.theta_
        x1, traj, stats = s.sample[self.device](theta, self.spec_, x0, s.name, steps, rtol,
                                                atol, record, t0, t1, y, w)
        if stats is not None:
            self.last_solve_ = stats
        return x1.astype(DTYPE, copy=False), traj

    @within_threads
    def sample(self, n=DEFAULTS["n_samples"], method=None, steps=None, seed=1, record=0,
               ema=True, x0=None,
               return_logprob=False, rtol=1e-5, atol=1e-5, labels=None, guidance=1.0,
               dtype="float32", qmc=False, noise=None, condition=None, marginal=None):
        """Draw ``n`` samples: x0 from the source (N(0, I) unless ``fit`` was given
        another, ``draw_source`` with ``default_rng(seed)``; ``qmc=True``: quasi-random
        N(0, I) points, more even sample sets that are no longer independent draws,
        fmnumpy/quasi.py) or the given x0,
        integrated from t = 0 to 1 with ``method`` (euler, midpoint, heun, rk4 with
        ``steps`` steps, or adaptive dopri5 with ``rtol``/``atol``) on
        ``self.device`` (``sampling.SOLVERS``: what is not available there raises).

        A conditional model samples class ``labels`` (an int, or (n,) ints) with the
        classifier-free guidance weight ``guidance`` (w: v = v_null + w (v_y - v_null),
        docs/guidance.md); labels=None samples the whole distribution (the null class).
        A model of continuous conditions takes ``condition``: K numbers for every sample,
        or (n, K) (docs/conditions.md), guided the same way.  Given neither, a conditional
        model samples its whole distribution as ``marginal`` says: "data" (the default)
        draws each sample's label or condition from the training data's own, "null" uses
        the null condition (with ``return_logprob``: always the null condition, whose
        density the solve gives).

        Returns (n, D); with ``record`` = R also the trajectory (R + 1, n, D) (jumps:
        the K + 1 states between them); with
        ``return_logprob`` also log p(x1) (n,) float64 from the same solve, the
        network's passes in ``dtype`` ("float32", or the float64 oracle;
        docs/likelihood.md).  ``last_solve_`` holds the NFE of adaptive solves.

        ``method="sde"``: Euler-Maruyama in ``steps`` steps of the SDE with the ODE's
        marginals and diffusion g(t)^2 = noise^2 sigma_t (default ``noise`` 1; 0 is
        Euler), the score read off the velocity (``sde.py``, docs/sde.md); the
        straight and cosine paths from N(0, I), on the CPU, without ``record`` or
        ``return_logprob``; the Brownian increments drawn from ``seed``.

        ``method="jump"``: a flow map (objective meanflow or shortcut) makes ``steps``
        jumps x <- x + h u(x, s, s + h), h = 1 / steps (flowmap.py, docs/flow_maps.md).
        method=None is "jump" for a flow map, else rk4; steps=None is ``DEFAULTS["jumps"]``
        jumps, else ``DEFAULTS["sample_steps"]`` steps.  The ODE methods run a flow map
        on its diagonal u(x, t, t) = v(x, t)."""
        self._check_fitted()
        method, steps = self.default_sampler(method, steps)
        rows = n if x0 is None else np.shape(x0)[0]
        if not return_logprob:
            labels, condition = self._marginal(labels, condition, rows, seed, marginal)
        if str(method).lower() == "sde":
            return self._sample_sde(n, steps, seed, record, ema, x0, return_logprob, labels,
                                    guidance, qmc, 1.0 if noise is None else noise,
                                    condition)
        if noise is not None:
            raise FmnumpyError(f"noise is the SDE sampler's; pass method='sde' (not "
                               f"{method!r}) or drop noise")
        s = solver(method, self.device, logprob=return_logprob)
        if return_logprob:
            self._check_gaussian_source()
            if guidance != 1.0:
                raise FmnumpyError("return_logprob gives the density of the model's own "
                                   "conditional flow; drop guidance")
        if x0 is None:
            n = positive_int("number of samples", n)
            x0 = self.draw_source(n, np.random.default_rng(seed), qmc=qmc)
        elif qmc:
            raise FmnumpyError("qmc=True draws x0; pass either x0 or qmc=True")
        if record and (return_logprob or s.adaptive):
            raise FmnumpyError("record needs a fixed-step method and no return_logprob")
        if return_logprob:
            x0 = np.asarray(x0, dtype=DTYPE)
            if x0.ndim != 2 or x0.shape[1] != self.spec_.dim:
                raise FmnumpyError(f"x0 must have shape (n, {self.spec_.dim}), got {x0.shape}")
            x1, logp, self.last_solve_ = _lik.sample_with_logprob(
                self.ema_ if ema else self.theta_, self.spec_, x0, s.name, steps, rtol, atol,
                return_stats=True, dtype=dtype, device=self.device,
                cond=self._block(labels, condition, x0.shape[0], ema))
            return x1.astype(DTYPE), logp
        x1, traj = self._solve(x0, s.name, steps, rtol, atol, record, ema, labels=labels,
                               guidance=guidance, condition=condition)
        return (x1, traj) if record else x1

    def default_steps(self):
        """The training steps of ``fit(steps=None)``: ``DEFAULTS["steps"]``, or ``MAP_STEPS``
        for a flow map."""
        return DEFAULTS["steps"] if self.objective == "fm" else MAP_STEPS

    def default_sampler(self, method=None, steps=None):
        """(method, steps) with None filled: ``DEFAULTS["jumps"]`` jumps for a flow map,
        else rk4 and ``DEFAULTS["sample_steps"]`` steps."""
        if method is None:
            method = "jump" if self.spec_.flow_map else DEFAULTS["method"]
        if steps is None:
            jumps = str(method).lower() == "jump"
            steps = DEFAULTS["jumps"] if jumps else DEFAULTS["sample_steps"]
        return method, steps

    def _sample_sde(self, n, steps, seed, record, ema, x0, return_logprob, labels, guidance,
                    qmc, noise, condition=None):
        """sample(method="sde"): the checks of docs/sde.md, then ``sde.euler_maruyama``."""
        from fmnumpy.euclidean import sde
        noise = sde.check_noise(noise)
        steps = positive_int("steps", steps)
        path, param = self.path_args()
        if self.source_ is not None:
            raise FmnumpyError(f"method='sde' reads the score off the velocity, which needs "
                               f"the N(0, I) source; this model transports from "
                               f"{self.source_.name!r}: use an ODE method")
        if path not in sde.SCHEDULES:
            raise FmnumpyError(f"method='sde' needs the score from the velocity, which the "
                               f"{'constant-width sigma' if path == GAUSS else self.path} "
                               f"path does not give; it takes the straight (sigma=0) and "
                               f"cosine paths")
        if self.device != "cpu":
            raise FmnumpyError("method='sde' runs on the CPU; use device='cpu'")
        if record or return_logprob:
            raise FmnumpyError("method='sde' gives samples only: drop record and "
                               "return_logprob, or use an ODE method")
        if x0 is None:
            x0 = self.draw_source(positive_int("number of samples", n),
                                  np.random.default_rng(seed), qmc=qmc)
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.ndim != 2 or x0.shape[1] != self.spec_.dim:
            raise FmnumpyError(f"x0 must have shape (n, {self.spec_.dim}), got {x0.shape}")
        y, w = self._labels(labels, x0.shape[0], guidance, condition, ema)
        field = self._field(ema, y, w, x0.shape[0])
        rng = np.random.default_rng([int(seed), SDE_STREAM])
        return sde.euler_maruyama(field, x0, steps, noise, rng, path, param).astype(DTYPE)

    def _field(self, ema, y, w, N):
        """v(x, t) (N, D) of the network for N particles at a scalar t, guided by
        labels y with weight w (``integrate.mlp_field``); its buffers are made once."""
        from fmnumpy.euclidean.integrate import mlp_field
        from fmnumpy.nn.mlp import Workspace
        sp = self.spec_
        ws = Workspace(sp.sizes, N)
        y = self._null(N) if y is None else y         # (0,) for an unconditional model
        V, out = np.empty((N, sp.dim), DTYPE), np.empty((N, sp.dim), DTYPE)
        params = (self.ema_ if ema else self.theta_, sp.sizes, sp.kind, sp.feats, ws.X, ws.A,
                  ws.Z, y, float(w), V)

        def field(x, t):
            mlp_field(params, np.ascontiguousarray(x, dtype=DTYPE), np.full(N, t, DTYPE), out)
            return out
        return field

    @within_threads
    def transport(self, x, reverse=False, method=DEFAULTS["method"],
                  steps=DEFAULTS["sample_steps"], rtol=1e-5, atol=1e-5, ema=True):
        """Move given points x (n, D) along the flow: source -> data (t from 0 to 1),
        or data -> source with ``reverse=True`` (t from 1 to 0).  Returns (n, D)."""
        self._check_fitted()
        t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
        return self._solve(x, method, steps, rtol, atol, 0, ema, t0, t1)[0]

    @within_threads
    def log_prob(self, x, method="rk4", steps=100, rtol=1e-5, atol=1e-5, ema=True,
                 dtype="float32", labels=None, condition=None):
        """log p_1(x) (N,) float64 of given points x (N, D), by the instantaneous
        change of variables integrated from t = 1 back to t = 0 (docs/likelihood.md).
        The state is float64; the network's forward and tangent passes run in
        ``dtype``: "float32" (fast) or "float64" (the oracle).  A conditional model
        gives log p(x | y) of ``labels`` or log p(x | c) of ``condition`` (as
        :meth:`sample` takes them; None: the null one's density)."""
        self._check_fitted()
        s = solver(method, self.device, logprob=True)
        self._check_gaussian_source()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.spec_.dim:
            raise FmnumpyError(f"x must have shape (N, {self.spec_.dim}), got {x.shape}")
        logp, self.last_solve_ = _lik.log_prob(self.ema_ if ema else self.theta_, self.spec_,
                                               x, s.name, steps, rtol, atol, return_stats=True,
                                               dtype=dtype, device=self.device,
                                               cond=self._block(labels, condition, x.shape[0],
                                                                ema))
        return logp

    def _block(self, labels, condition, n, ema=True):
        """The condition block (n, W) a conditional model's likelihood writes into its
        input (the one-hot of the labels, or the block of the condition; the null one
        when neither is given), or None for an unconditional model."""
        sp = self.spec_
        y, _ = self._labels(labels, n, 1.0, condition, ema)   # (refuses them if unconditional)
        if not (sp.n_classes or sp.n_cond):
            return None
        y = self._null(n) if y is None else y
        if sp.n_classes:
            return np.eye(sp.n_classes + 1, dtype=np.float64)[y]
        return np.asarray(y, dtype=np.float64)

    @within_threads
    def density_grid(self, lim=4.0, n_grid=200, method="rk4", steps=100, ema=True,
                     dtype="float32"):
        """(gx, gy, log p (n_grid, n_grid)) on a square grid of cell centres (D = 2),
        the network in ``dtype`` (as :meth:`log_prob`)."""
        self._check_fitted()
        s = solver(method, self.device, logprob=True)
        self._check_gaussian_source()
        self._check_unconditional()
        return _lik.density_grid(self.ema_ if ema else self.theta_, self.spec_, lim, n_grid,
                                 s.name, steps, dtype=dtype, device=self.device)

    # -- evaluation -------------------------------------------------------------------
    @within_threads
    def evaluate(self, data=None, n=2000, seed=0, method=None, steps=None, ema=True,
                 qmc=False):
        """Sample quality and transport cost of the flow, as a dict (docs/metrics.md):

        w1, w2 (exact, n samples against n fresh points of ``data``, by default the
        training data), mmd, energy (metrics.evaluate), npe (the normalized path
        energy |E int_0^1 ||v||^2 dt - W2^2(source, data)| / W2^2(source, data) of
        Tong et al. 2024, the energy along the n sampled trajectories), straightness
        (metrics.straightness from the same source points, at most 1,000), nfe, n.
        Draws: source points ``default_rng([seed, 10])``, fresh data
        ``default_rng([seed, 9])``, and n more source points ``[seed, 11]`` for
        W2(source, data); a conditional model's samples at labels or conditions drawn
        from the training data's (``sample``'s marginal "data"); ``qmc=True`` draws the
        first source points quasi-randomly (as ``sample(qmc=True)``), the others stay
        independent.  method and steps as
        :meth:`sample`'s (a flow map's jumps: nfe = steps)."""
        from fmnumpy import metrics
        from fmnumpy.ode.solvers import tableau
        self._check_fitted()
        method, steps = self.default_sampler(method, steps)
        n = positive_int("the number of evaluation points", n)
        if n < 2:
            raise FmnumpyError(f"the number of evaluation points must be at least 2, got {n}")
        if solver(method, self.device).adaptive:
            raise FmnumpyError(f"evaluate integrates the path energy along fixed steps; "
                               f"choose a fixed-step method, not {method!r}")
        if data is None:
            data = self.source_data()
        draw = datasets.make_sampler(data)
        x0 = np.asarray(self.draw_source(n, np.random.default_rng([seed, 10]), qmc=qmc),
                        dtype=DTYPE)
        fresh = np.asarray(draw(n, np.random.default_rng([seed, 9])))
        labels, condition = self._marginal(None, None, n, seed, None)   # a conditional
        x1, traj = self._solve(x0, method, steps, 1e-5, 1e-5, steps, ema, labels=labels,
                               condition=condition)             # model's whole distribution
        out = metrics.evaluate(x1, fresh, max_points=n)
        out["w1"] = metrics.w1(x1, fresh)
        ts = np.linspace(0.0, 1.0, traj.shape[0])
        v = np.stack([self.velocity(traj[k], ts[k], ema=ema, labels=labels,
                                    condition=condition) for k in range(traj.shape[0])])
        energy = metrics.path_energy(v, ts)
        ends = metrics.w2(self.draw_source(n, np.random.default_rng([seed, 11])), fresh)
        out.update(path_energy=energy, w2_source_data=ends,
                   npe=metrics.normalized_path_energy(energy, ends),
                   straightness=metrics.straightness(
                       lambda xx, tt: self.velocity(
                           xx, tt, ema=ema, labels=None if labels is None else labels[:1000],
                           condition=None if condition is None else condition[:1000]),
                       x0[:1000], steps=100),
                   nfe=int(steps) * (1 if str(method).lower() == "jump"
                                     else tableau(method).stages), n=n)
        if self.spec_.n_classes:
            labelled = _labelled(data)
            if labelled is not None:
                out["w2_per_class"] = self._w2_per_class(labelled, n, seed, method, steps, ema)
        return out

    def _w2_per_class(self, data, n, seed, method, steps, ema):
        """Exact W2 of the samples of each class (guidance 1) against fresh labelled
        ``data`` of that class: [W2 of class 0, 1, ...], each on n // K points."""
        K = self.spec_.n_classes
        x, y = data.draw_labeled(2 * n, np.random.default_rng([seed, 12]))
        from fmnumpy.metrics import w2 as exact_w2
        out = []
        for k in range(K):
            fresh = np.asarray(x[y == k][:max(2, n // K)])
            x0 = self.draw_source(fresh.shape[0], np.random.default_rng([seed, 13, k]))
            xk, _ = self._solve(x0, method, steps, 1e-5, 1e-5, 0, ema, labels=k)
            out.append(exact_w2(xk, fresh))
        return out

    def source_data(self):
        """The training data's name or path, for drawing fresh points to compare with."""
        if self.data_ in (None, "array", "reflow"):
            raise FmnumpyError("this model was trained on an in-memory array; pass the data "
                               "to compare with (evaluate(data=...), --data FILE or "
                               "--dataset NAME)")
        return self.data_

    # -- persistence ------------------------------------------------------------------
    # The shared schema (train/estimator.py, docs/checkpoints.md) plus, in ``extra``,
    # the network's shape as trained (x_freqs resolved, classes), the source's name
    # (its rows, when it is user data, as the array ``source``) and ``_extra_meta``.
    def _checkpoint_extra(self):
        extra = dict(n_classes=self.spec_.n_classes, x_freqs_used=self.spec_.x_freqs,
                     x_dirs_used=self.spec_.x_dirs,
                     conditions=None if self.cond_ is None else self.cond_.to_dict(),
                     class_freq=(None if self.class_freq_ is None
                                 else self.class_freq_.tolist()),
                     source=None if self.source_ is None else self.source_.name,
                     **self._extra_meta())
        arrays = {}
        if self.source_ is not None and self.source_.array is not None:
            arrays["source"] = self.source_.array      # user data: kept, not re-read
        if self.cond_rows_ is not None:
            arrays["conditions"] = self.cond_rows_     # what sample(marginal="data") draws
        return extra, arrays

    def _extra_meta(self):
        """What a subclass adds to the checkpoint's ``extra`` metadata."""
        return {}

    def _load_extra(self, extra):
        """Subclasses read their own part of the checkpoint's ``extra`` metadata."""

    @classmethod
    def _params_of(cls, meta):
        if "params" not in meta:                       # fmnumpy 0.1.0's schema
            return cls.params_from_meta(meta)
        p = super()._params_of(meta)
        p["coupling_options"] = dict(p.get("coupling_options") or {})
        return p

    def _restore_extra(self, meta, arrays, path):
        if "params" not in meta:                       # fmnumpy 0.1.0's schema
            spec = meta["spec"]
            meta["dim"] = spec["dim"]
            meta.setdefault("seconds", meta.get("train_seconds", 0.0))
            extra = dict(meta.get("extra", {}), n_classes=spec.get("n_classes", 0),
                         x_freqs_used=spec.get("x_freqs", 0), source=meta.get("source"))
        else:
            extra = meta["extra"]
        cond = extra.get("conditions")
        self._init_state(int(meta["dim"]), int(extra["n_classes"]), int(extra["x_freqs_used"]),
                         extra.get("x_dirs_used", "diagonals"),    # 0.1.0 had the diagonals
                         None if cond is None else Standardizer.from_dict(cond))
        P = self.spec_.n_params
        for name in ("theta", "m", "v", "ema"):
            if arrays[name].shape != (P,):
                raise FmnumpyError(f"{path}: array {name} has shape {arrays[name].shape}, "
                                   f"expected ({P},); the file is damaged")
        name = extra.get("source")
        if name is not None:
            self.source_ = datasets.as_data(arrays["source"] if "source" in arrays else name)
            self.source_.name = name
            if self.source_.dim != self.spec_.dim:
                raise FmnumpyError(f"{path}: the stored source has D={self.source_.dim}, "
                                   f"the model D={self.spec_.dim}; the file is damaged")
        if extra.get("class_freq") is not None:
            self.class_freq_ = np.asarray(extra["class_freq"])
        if "conditions" in arrays:
            self.cond_rows_ = np.asarray(arrays["conditions"])
        self._load_extra(extra)

    @staticmethod
    def params_from_meta(meta):
        """The constructor's arguments stored in a checkpoint of fmnumpy 0.1.0."""
        spec, opt, extra = meta["spec"], meta["opt"], meta.get("extra", {})
        params = {k: opt[k] for k in ("lr", "weight_decay", "clip", "ema_decay", "warmup",
                                      "schedule", "lr_min")}
        return dict(params, hidden=tuple(spec["hidden"]), activation=spec["activation"],
                    time_freqs=spec.get("n_freq", 0),
                    # the configured value; checkpoints from before x_freqs had none
                    x_freqs=meta.get("x_freqs", spec.get("x_freqs", 0)),
                    x_dirs="diagonals",               # the only directions of 0.1.0
                    optimizer=meta["optimizer"],
                    sigma_min=meta["sigma_min"], sigma=meta.get("sigma", 0.0),
                    seed=meta["seed"],
                    # checkpoints from before the path option trained the straight path
                    path=meta.get("path", "straight"),
                    sb_sigma=meta.get("sb_sigma", DEFAULTS["sb_sigma"]),
                    # and drew t uniformly
                    time_power=meta.get("time_power", 1.0),
                    label_dropout=meta.get("label_dropout", DEFAULTS["label_dropout"]),
                    coupling=extra.get("coupling", "independent"),
                    coupling_options=extra.get("coupling_options", {}))

    def __repr__(self):
        state = f", step={self.step_}" if self.spec_ is not None else ""
        return (f"FlowMatcher(hidden={self.hidden}, activation={self.activation!r}, "
                f"seed={self.seed}{state})")


FlowMatcher.PARAMS = FlowMatcher.param_names()
