"""``ManifoldFlowMatcher``: Riemannian flow matching on the sphere or the flat torus
as an estimator (fit, sample, log_prob, evaluate, save; ``fmnumpy.load``).  The math
is in ``manifold/manifolds.py`` (the contract), ``riemannian.py`` and ``solvers.py``;
the derivations in ``docs/manifolds.md``.  Parameters, threads, the training loop,
the update and checkpoints are the shared ones (``train/estimator.py``).

Dimension letters: N points, D coordinates (unit vectors in R^D on the sphere,
D angles on the torus).
"""
import numpy as np

from fmnumpy.config import DTYPE
from fmnumpy.couplings.assignment import linear_assignment
from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.manifold import datasets as mdata
from fmnumpy.manifold import riemannian as rfm
from fmnumpy.manifold import solvers as msol
from fmnumpy.manifold.manifolds import (NAMES, SPHERE, TORUS, check_points, manifold_code,
                                        sample_prior, sq_dist_matrix)
from fmnumpy.manifold.metrics import geodesic_w2
from fmnumpy.nn.activations import activation_code
from fmnumpy.nn.mlp import StepWork, init_params, param_count
from fmnumpy.ode.solvers import tableau
from fmnumpy.train.estimator import Estimator, check_threads, positive_steps, within_threads
from fmnumpy.train.loop import HostStepper
from fmnumpy.train.state import TrainState
from fmnumpy.train.times import check_time_power, time_from_uniform
from fmnumpy.train.update import hyper_at

COUPLINGS = ("independent", "ot")
TRAIN_STREAM, SAMPLE_STREAM, EVAL_STREAM = 21, 22, 23     # purposes of the seeded generators


class ManifoldFlowMatcher(Estimator):
    """Flow matching on a manifold: x0 uniform, geodesic paths to the data, a
    tangent velocity v = P(x) MLP(x, t) (``riemannian.py``).

    manifold "sphere" (points of S^(D-1), unit vectors in R^D) or "torus" (D
    angles); the MLP's hidden widths, activation, time_freqs and x_freqs (Fourier
    features of the point: ``riemannian.manifold_features``); the shared update's
    lr, optimizer, weight_decay, clip, warmup, schedule, lr_min and ema_decay (the
    EMA that sampling uses); the coupling of x0 and x1 in a batch ("independent" or
    "ot", the exact minibatch optimal transport on the squared geodesic distance);
    time_power K of the training times t = 1 - (1 - u)^K (1: uniform;
    ``train.times.time_from_uniform``); the sampler's method (euler, midpoint, heun,
    rk4) and sample_steps; seed; threads (None: as they are).  The defaults are the
    ones bench/manifolds.py chose (bench/results/manifolds_configs.md).
    """

    FAMILY = "manifold"

    def __init__(self, manifold="sphere", hidden=(256, 256, 256), activation="silu",
                 time_freqs=0, x_freqs=2, lr=2e-3, optimizer="adam", weight_decay=0.0,
                 clip=1.0, warmup=500, schedule="cosine", lr_min=1e-5, ema_decay=0.999,
                 coupling="independent", time_power=2.0, method="rk4", sample_steps=100,
                 seed=0, threads=None):
        self.code = manifold_code(manifold)
        if self.code not in (SPHERE, TORUS):
            raise FmnumpyError("ManifoldFlowMatcher needs manifold 'sphere' or 'torus'; "
                               "use FlowMatcher for Euclidean data")
        self.manifold = NAMES[self.code]
        self.hidden = tuple(positive_int("hidden width", h) for h in hidden)
        self.activation = str(activation).lower()
        self.kind = activation_code(self.activation)
        self.time_freqs = int(time_freqs)
        if self.time_freqs < 0:
            raise FmnumpyError(f"time_freqs must be >= 0, got {time_freqs}")
        self.x_freqs = int(x_freqs)
        if self.x_freqs < 0:
            raise FmnumpyError(f"x_freqs must be >= 0, got {x_freqs}")
        self._configure_update(lr, optimizer, weight_decay, clip, warmup, schedule, lr_min,
                               ema_decay)
        if coupling not in COUPLINGS:
            raise FmnumpyError(f"unknown coupling {coupling!r} on a manifold; choose one of: "
                               + ", ".join(COUPLINGS))
        self.coupling = coupling
        self.time_power = check_time_power(time_power)
        self.method = tableau(method).name
        self.sample_steps = positive_int("sample_steps", sample_steps)
        self.seed = int(seed)
        self.threads = check_threads(threads)
        self.dim_ = self.state_ = self.data_ = None
        self.batch_size_ = self.total_steps_ = None

    # -- the network -----------------------------------------------------------------
    def _init_state(self, dim):
        if self.code == SPHERE and dim < 2:
            raise FmnumpyError(f"points of the sphere need D >= 2 coordinates, got {dim}")
        self.dim_ = int(dim)
        self.sizes_ = rfm.net_sizes(self.code, self.dim_, self.hidden, self.time_freqs,
                                    self.x_freqs)
        rng = np.random.default_rng([self.seed, 0])
        self.state_ = TrainState(init_params(self.sizes_, rng, np.float64).astype(DTYPE))

    @property
    def n_params(self):
        return param_count(self.sizes_)

    def _net(self):
        feats = (self.time_freqs, self.x_freqs, rfm.feature_directions(self.code, self.dim_))
        return (self.code, self.sizes_, self.kind, feats)

    def _points(self, x, where="x"):
        return check_points(self.code, x, self.dim_, where)

    def _data(self, data, dim=None):
        """(name, sampler(n, rng) or None, the points (N, D) or None); user points must
        have ``dim`` columns when it is given."""
        if isinstance(data, str):
            mdata.check_name(data)
            if mdata.manifold_of(data) != self.code:
                raise FmnumpyError(f"dataset {data!r} lives on the "
                                   f"{NAMES[mdata.manifold_of(data)]}, the model on the "
                                   f"{self.manifold}")
            return data, (lambda n, rng: mdata.sample(data, n, rng)), None
        return "user data", None, check_points(self.code, data, dim)

    # -- training --------------------------------------------------------------------
    @within_threads
    def fit(self, data=None, steps=10000, batch_size=256, warm_start=False, until=None,
            progress=False, callback=None, callback_every=0, checkpoint=None,
            checkpoint_every=2000, log=None):
        """Train on ``data``: a named dataset (``manifold/datasets.py``; default vmf on
        the sphere, wrapped_gmm on the torus) or an (N, D) array of unit vectors /
        angles, up to ``steps`` steps in total (``warm_start=True`` continues a fitted
        model) of ``batch_size``.  Step k draws x1, x0 and t from
        ``default_rng([seed, 21, k])`` and the learning-rate schedule spans ``steps``,
        so a resumed run continues bit for bit.  ``checkpoint``: a path written every
        ``checkpoint_every`` steps, at the end, and on Ctrl-C; ``callback(model, k)``
        every ``callback_every`` steps; ``until`` stops early."""
        data = mdata.DEFAULT_DATASET[self.code] if data is None else data
        steps, B = positive_steps(steps, batch_size)
        keep = self._continues(warm_start, steps, B)
        name, draw, x = self._data(data, self.dim_ if keep else None)
        dim = x.shape[1] if x is not None else mdata.DATASETS[name][1]
        if keep and dim != self.dim_:
            raise FmnumpyError(f"the data has D = {dim}, the model {self.dim_}")
        if not keep:
            self._init_state(dim)
        self.data_, self.batch_size_, self.total_steps_ = name, B, steps
        st, net = self.state_, self._net()
        work = StepWork(self.sizes_, B, DTYPE).buffers()
        C = np.empty((B, B)) if self.coupling == "ot" else None

        def step(k, total):
            rng = np.random.default_rng([self.seed, TRAIN_STREAM, k])
            x1 = draw(B, rng) if draw else x[rng.integers(0, x.shape[0], B)]
            x0 = sample_prior(self.code, B, self.dim_, rng, DTYPE)
            if self.coupling == "ot":
                x1 = x1[geodesic_ot_pairs(self.code, x0, x1, C)]
            t = time_from_uniform(rng.random(B), self.time_power)
            batch = (x0, x1.astype(DTYPE), t.astype(DTYPE))
            return rfm.train_step(st.buf, net, batch, hyper_at(self.opt, k + 1, total), work)[0]

        return self._run(HostStepper(step), None, steps, until, progress, callback,
                         callback_every, checkpoint, checkpoint_every, log)

    # -- sampling and likelihood -----------------------------------------------------
    def _theta(self, ema=True):
        self._check_fitted()
        return self.state_.ema if ema else self.state_.theta

    @within_threads
    def sample(self, n=2000, seed=0, method=None, steps=None, record=0, ema=True):
        """n points (n, D) on the manifold: x0 uniform, pushed from t = 0 to 1 by
        ``method`` (default the model's) in ``steps`` steps.  With ``record`` = R
        also the trajectory (R + 1, n, D)."""
        self._check_fitted()
        x0 = sample_prior(self.code, positive_int("n", n), self.dim_,
                          np.random.default_rng([int(seed), SAMPLE_STREAM]))
        return msol.integrate(self._theta(ema), self._net(), x0,
                              tableau(method or self.method).name,
                              positive_int("steps", steps or self.sample_steps),
                              int(record))

    @within_threads
    def velocity(self, x, t, ema=True):
        """v(x, t) (N, D), tangent at the points x (N, D)."""
        x = self._points(x)
        tt = np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0],)).copy()
        out = np.empty_like(x)
        msol.flow_field(msol.solver_params(self._theta(ema), self._net(), x.shape[0], False),
                        x, tt, out)
        return out

    @within_threads
    def log_prob(self, x, method="rk4", steps=100, ema=True, dtype="float32"):
        """log p_1(x) (N,) with respect to the manifold's volume (area on S^2):
        the exact Riemannian divergence integrated backwards from t = 1 to 0, the
        state in float64, the network's passes in ``dtype``: "float32" (the default:
        3.4x to 3.7x the time of sampling the same points, against 12.6x in float64,
        within 1e-6 nats of it; bench/results/logp_sphere.md) or "float64", the oracle
        of the tests.  The chunks of points run on the model's threads."""
        x = self._points(x)
        if str(dtype) not in ("float32", "float64"):
            raise FmnumpyError(f"dtype must be float32 or float64, got {dtype!r}")
        return msol.log_prob(self._theta(ema), self._net(), x, tableau(method).name,
                             positive_int("steps", steps), dtype=np.dtype(str(dtype)))

    def density_grid(self, n_grid=90, method="rk4", steps=100, ema=True, dtype="float32"):
        """log p_1 on the cell centres of an equal-area grid of S^2 (2 n x n cells in
        longitude x sin latitude) or of T^2 (n x n cells).  Returns (a, b, logp,
        cell_area) with logp[i, j] at a[j], b[i] (a: longitude or theta_1; b: sin
        latitude or theta_2), so exp(logp).sum() * cell_area is the midpoint rule
        for the total mass, 1 for a density."""
        self._check_fitted()
        if self.dim_ != (3 if self.code == SPHERE else 2):
            raise FmnumpyError("density_grid covers S^2 and T^2 only")
        a, b, pts, area = grid_points(self.code, positive_int("n_grid", n_grid))
        logp = self.log_prob(pts, method, steps, ema, dtype).reshape(len(b), len(a))
        return a, b, logp, area

    # -- evaluation --------------------------------------------------------------------
    @within_threads
    def evaluate(self, data=None, n=2000, pairs=20, seed=0, steps=None, logp_n=2000,
                 dtype="float32"):
        """Geodesic W2 of n samples against n fresh data points, the data floor (the W2
        between two fresh draws) averaged over ``pairs`` pairs with its sd, and the
        mean log-likelihood of logp_n fresh points (solved in ``dtype``) against their
        exact mean log-density: the difference estimates KL(data || model)."""
        self._check_fitted()
        name, draw, x = self._data(data if data is not None else self.data_)
        if draw is None:
            raise FmnumpyError("evaluate needs a named dataset (fresh draws for the floor)")
        rng = np.random.default_rng([seed, EVAL_STREAM])
        samples = self.sample(n, seed=seed + 1, steps=steps)
        w2 = geodesic_w2(samples, draw(n, rng), self.manifold)
        floors = [geodesic_w2(draw(n, rng), draw(n, rng), self.manifold)
                  for _ in range(positive_int("pairs", pairs))]
        out = {"w2": w2, "w2_floor": float(np.mean(floors)),
               "w2_floor_sd": float(np.std(floors, ddof=1)) if pairs > 1 else 0.0,
               "n": n, "pairs": pairs, "dataset": name, **on_manifold(self.code, samples)}
        out["w2_ratio"] = w2 / out["w2_floor"]
        if logp_n:
            pts = draw(logp_n, rng)
            out.update(logp=float(self.log_prob(pts, dtype=dtype).mean()),
                       logp_data=float(mdata.log_density(name, pts).mean()), logp_n=logp_n)
            out["kl"] = out["logp_data"] - out["logp"]
        return out



def geodesic_ot_pairs(code, x0, x1, C):
    """The exact minibatch optimal transport coupling on the squared geodesic cost:
    the permutation pi minimising sum_i d(x0_i, x1_pi(i))^2 (``assignment.py``), so
    that x0_i is paired with x1[pi[i]].  C (B, B) is scratch for the costs."""
    sq_dist_matrix(code, x0, x1, C)
    return linear_assignment(C)


def on_manifold(code, x):
    """How far points x (N, D) are from the manifold: the largest | |x| - 1 | on the
    sphere (in float64), the range of the angles on the torus."""
    x = np.asarray(x, dtype=np.float64)
    if code == SPHERE:
        return {"max_norm_error": float(np.abs(np.linalg.norm(x, axis=1) - 1.0).max())}
    return {"angle_min": float(x.min()), "angle_max": float(x.max())}


def grid_mass(grid):
    """The total mass exp(logp).sum() * cell_area of a ``density_grid`` (a, b, logp,
    cell_area): the midpoint rule, 1 for a density."""
    return float(np.exp(grid[2]).sum() * grid[3])


def grid_points(code, n):
    """Cell centres of the equal-area grid of ``ManifoldFlowMatcher.density_grid``:
    (a, b, points (len(a) len(b), D), cell area)."""
    if code == SPHERE:
        a = (np.arange(2 * n) + 0.5) * np.pi / n                     # longitude
        b = -1.0 + (np.arange(n) + 0.5) * 2.0 / n                   # z = sin latitude
        lon, z = np.meshgrid(a, b)
        r = np.sqrt(1.0 - z * z)
        pts = np.stack([r * np.cos(lon), r * np.sin(lon), z], axis=-1).reshape(-1, 3)
        return a, b, pts, (np.pi / n) * (2.0 / n)                   # d lon d z = dA
    a = (np.arange(n) + 0.5) * (2.0 * np.pi / n)
    t1, t2 = np.meshgrid(a, a)
    return a, a, np.stack([t1, t2], axis=-1).reshape(-1, 2), (2.0 * np.pi / n) ** 2

