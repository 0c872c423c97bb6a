"""``DiscreteFlowMatcher``: discrete flow matching as an estimator (fit, sample,
elbo, evaluate, save; ``fmnumpy.load``).  The math is in ``discrete/mixture.py``; the
derivations in ``docs/discrete.md``.  Parameters, threads, the training loop, the
update and checkpoints are the shared ones (``train/estimator.py``).

Dimension letters: N samples, D positions, V vocabulary.
"""
import numpy as np

from fmnumpy.config import DTYPE
from fmnumpy.discrete import mixture as dfm
from fmnumpy.discrete.tokens import TokenData, check_tokens, total_variation, tv_floor
from fmnumpy.discrete.tokens import vocab_size as checked_vocab
from fmnumpy.errors import FmnumpyError, positive_finite, positive_int
from fmnumpy.nn.activations import activation_code
from fmnumpy.nn.mlp import init_params, param_count
from fmnumpy.train.estimator import Estimator, check_threads, positive_steps, within_threads
from fmnumpy.train.loop import HostStepper
from fmnumpy.train.state import TrainState
from fmnumpy.train.update import apply_update, hyper_at

TRAIN_STREAM, SAMPLE_STREAM, ELBO_STREAM = 11, 12, 13   # purposes of the seeded generators
CHUNK = 4096                                            # rows per network call when sampling


class DiscreteFlowMatcher(Estimator):
    """Discrete flow matching on sequences of D tokens in [0, V).

    vocab_size V; source "mask" (x0 is the mask token V) or "uniform" (x0 uniform
    tokens); hidden widths of the MLP; embed the width E of the token embedding;
    power n of the scheduler kappa_t = t^n; time_freqs sinusoidal time features;
    the shared update's lr, optimizer, weight_decay, clip, warmup, schedule, lr_min
    and ema_decay (the EMA that sampling uses); sample_steps of the jump sampler;
    seed; threads (None: as they are).
    """

    FAMILY = "discrete"

    def __init__(self, vocab_size=128, source="mask", hidden=(256, 256, 256), embed=32,
                 activation="silu", power=1.0, time_freqs=0, lr=1e-3, optimizer="adam",
                 weight_decay=0.0, clip=0.0, warmup=0, schedule="constant", lr_min=0.0,
                 ema_decay=0.999, sample_steps=100, seed=0, threads=None):
        self.vocab_size = checked_vocab(vocab_size)
        if source not in dfm.SOURCES:
            raise FmnumpyError(f"unknown source {source!r}; choose one of: "
                               f"{', '.join(dfm.SOURCES)}")
        self.source = source
        self.hidden = tuple(positive_int("hidden width", h) for h in hidden)
        self.embed = positive_int("embed", embed)
        self.activation = str(activation).lower()
        self.kind = activation_code(self.activation)
        self.power = positive_finite("power", power, " (kappa_t = t^power)")
        self.time_freqs = int(time_freqs)
        if self.time_freqs < 0:
            raise FmnumpyError(f"time_freqs must be >= 0, got {time_freqs}")
        self._configure_update(lr, optimizer, weight_decay, clip, warmup, schedule, lr_min,
                               ema_decay)
        self.sample_steps = positive_int("sample_steps", sample_steps)
        self.seed = int(seed)
        self.threads = check_threads(threads)
        self.K = dfm.token_count(self.vocab_size, source)
        self.dim_ = self.state_ = self.data_ = None
        self.batch_size_ = self.total_steps_ = None

    # -- the network -----------------------------------------------------------------
    def _init_state(self, dim):
        self.dim_ = int(dim)
        self.sizes_ = dfm.net_sizes(self.dim_, self.vocab_size, self.embed, self.hidden,
                                    self.time_freqs)
        rng = np.random.default_rng([self.seed, 0])
        emb = rng.standard_normal(self.K * self.embed)           # N(0, 1), as nn.Embedding
        theta = np.concatenate([emb, init_params(self.sizes_, rng, np.float64)])
        self.state_ = TrainState(theta.astype(DTYPE))

    @property
    def n_params(self):
        return self.K * self.embed + param_count(self.sizes_)

    def _net(self):
        return (self.sizes_, self.kind, self.time_freqs, self.K, self.embed)

    def _data(self, data):
        return data if isinstance(data, TokenData) else TokenData(data, self.vocab_size)

    # -- training --------------------------------------------------------------------
    @within_threads
    def fit(self, data="discrete_checkerboard", steps=5000, batch_size=1024,
            warm_start=False, until=None, progress=False, callback=None, callback_every=0,
            checkpoint=None, checkpoint_every=2000, log=None):
        """Train on ``data`` (a named pmf, an (N, D) int array, a .npy/.csv file) up to
        ``steps`` steps in total (``warm_start=True`` continues a fitted model) of
        ``batch_size``.  Each step k draws x1, t, the mixture path's coin flips and x0
        from ``default_rng([seed, 11, k])``, so a run resumed from a checkpoint
        continues bit for bit.  ``checkpoint``: a path written every
        ``checkpoint_every`` steps, at the end, and on Ctrl-C before it propagates;
        ``callback(model, k)`` every ``callback_every`` steps; ``until`` stops early."""
        data = self._data(data)
        steps, B = positive_steps(steps, batch_size)
        if self._continues(warm_start, steps, B):
            if data.dim != self.dim_:
                raise FmnumpyError(f"the data has D = {data.dim} positions, the model "
                                   f"{self.dim_}")
        else:
            self._init_state(data.dim)
        self.data_, self.batch_size_, self.total_steps_ = data.name, B, steps
        st, net = self.state_, self._net()
        work = dfm.DiscreteWork(self.sizes_, B, DTYPE).buffers(B)

        def step(k, total):
            x1, xt, t, w = self._batch(data, k, B)
            loss = dfm.loss_and_grad(st.theta, st.dtheta, net, x1, xt, t, w, work)
            return apply_update(st.buf, loss, hyper_at(self.opt, k + 1, total))[0]

        return self._run(HostStepper(step), None, steps, until, progress, callback,
                         callback_every, checkpoint, checkpoint_every, log)

    def _batch(self, data, k, B):
        """Step k's batch: x1 ~ data, t ~ U(0, 1), xt on the mixture path, the weights
        of the predicted positions."""
        rng = np.random.default_rng([self.seed, TRAIN_STREAM, k])
        x1 = data.draw(B, rng)                                           # (B, D)
        t = rng.random(B)
        x0 = dfm.draw_source(self.source, self.vocab_size, x1.shape, rng)
        xt = dfm.mixture_path(x0, x1, t, self.power, rng.random(x1.shape))
        w = dfm.position_weights(self.source, xt, self.vocab_size, DTYPE)
        return x1, xt, t.astype(DTYPE), w

    # -- the posterior -----------------------------------------------------------------
    def _theta(self, ema=True):
        self._check_fitted()
        return self.state_.ema if ema else self.state_.theta

    def posterior(self, xt, t, ema=True):
        """p(x1 | xt) (N, D, V) at times t (N,) or a scalar, with the mask source's
        carry-over applied (an unmasked position is certain)."""
        xt = check_tokens(xt, self.K, where="xt")
        t = np.broadcast_to(np.asarray(t, dtype=DTYPE), (xt.shape[0],)).copy()
        P = np.empty((xt.shape[0], self.dim_ * self.vocab_size), dtype=DTYPE)
        for a, b, work in self._chunks(xt.shape[0]):
            P[a:b] = dfm.posterior(self._theta(ema), self._net(), xt[a:b], t[a:b], work)
        P = P.reshape(xt.shape[0], self.dim_, self.vocab_size)
        if self.source == dfm.MASK:
            known = xt != self.vocab_size
            P[known] = 0.0
            P[known, xt[known]] = 1.0
        return P

    def _chunks(self, n):
        work = dfm.DiscreteWork(self.sizes_, min(n, CHUNK), DTYPE)
        for a in range(0, n, CHUNK):
            b = min(n, a + CHUNK)
            yield a, b, work.buffers(b - a)

    # -- sampling ----------------------------------------------------------------------
    @within_threads
    def sample(self, n, seed=0, steps=None, record=None, ema=True):
        """(n, D) int64 tokens by the discrete Euler jump sampler from t = 0 to 1 on a
        uniform grid of ``steps`` (default sample_steps): in each step every position
        still to move (the masked ones with the mask source, all with the uniform one)
        jumps with probability (kappa_(t+h) - kappa_t) / (1 - kappa_t) (1 on the last step) to a
        draw of p(x1 | xt).  ``record``: times at which to keep a copy of xt, returned
        as (tokens, [(t, xt), ...])."""
        self._check_fitted()
        n = positive_int("n", n)
        steps = positive_int("steps", steps or self.sample_steps)
        rng = np.random.default_rng([int(seed), SAMPLE_STREAM])
        V, D = self.vocab_size, self.dim_
        x = dfm.draw_source(self.source, V, (n, D), rng)
        grid = np.linspace(0.0, 1.0, steps + 1)
        frames = [] if record is not None else None
        marks = sorted(float(r) for r in (record if record is not None else ()))
        def keep(t):
            while marks and marks[0] <= t + 1e-12:
                frames.append((marks.pop(0), x.copy()))

        if frames is not None:
            keep(0.0)
        for s in range(steps):
            t, h = grid[s], grid[s + 1] - grid[s]
            p = dfm.jump_probability(t, h, self.power, s == steps - 1)
            jump = rng.random((n, D)) < p
            if self.source == dfm.MASK:
                jump &= x == V
            rows = np.flatnonzero(jump.any(axis=1))
            u = rng.random(int(jump.sum()))           # one uniform per jump, row-major
            used = 0
            for a in range(0, rows.shape[0], CHUNK):
                r = rows[a:a + CHUNK]
                xs = x[r]
                P = self.posterior(xs, t, ema).reshape(r.shape[0], D * V)
                ii, dd = np.nonzero(jump[r])
                dfm.draw_categorical(P, ii, dd, u[used:used + ii.shape[0]], D, xs)
                used += ii.shape[0]
                x[r] = xs
            if frames is not None:
                keep(grid[s + 1])
        return (x, frames) if frames is not None else x

    # -- the ELBO ----------------------------------------------------------------------
    @within_threads
    def elbo(self, tokens, quad=16, mc=1, seed=0, ema=True):
        """A lower bound on log p(x) (N,) in nats for each row of ``tokens``
        (docs/discrete.md#elbo): the path-space bound of the CTMC, integrated in
        s = kappa_t by ``quad``-point Gauss-Legendre, with ``mc`` draws of the other
        positions per node and position.  The uniform source's bound is integrated in
        tau = -log(1 - s) on [0, discrete.ELBO_TAU_MAX] (its weight s / (1 - s) is
        singular at s = 1); ``elbo_tail_`` is then the mean integrand at the last
        node in nats per unit tau, near 0 when the integral has converged."""
        self._check_fitted()
        x1 = check_tokens(tokens, self.vocab_size)
        if x1.shape[1] != self.dim_:
            raise FmnumpyError(f"tokens have D = {x1.shape[1]} positions, the model "
                               f"{self.dim_}")
        N, D, V = x1.shape[0], self.dim_, self.vocab_size
        q = positive_int("quad", quad)
        mask = self.source == dfm.MASK
        nodes, weights = dfm.gauss_legendre01(q) if mask else dfm.elbo_nodes(q)
        tail = np.zeros(N)
        rng = np.random.default_rng([int(seed), ELBO_STREAM])
        total = np.zeros(N)
        rows = np.arange(N)
        for s, ws in zip(nodes, weights):
            t = s ** (1.0 / self.power)                   # kappa_t = s
            for _ in range(positive_int("mc", mc)):
                for d in range(D):
                    keep = rng.random((N, D)) < s
                    x0 = dfm.draw_source(self.source, V, (N, D), rng)
                    xt = np.where(keep, x1, x0)
                    xt[:, d] = x0[:, d]                   # position d not yet at x1
                    P = self.posterior(xt, t, ema)
                    p1 = P[rows, d, x1[:, d]].astype(np.float64)
                    nll = -np.log(np.maximum(p1, 1e-30))
                    if mask:
                        # lambda (1 - kappa) = kappa': the weight is ds
                        total -= ws * nll
                        continue
                    moved = xt[:, d] != x1[:, d]
                    stay = P[rows, d, xt[:, d]].astype(np.float64)
                    f = np.where(moved, nll - 1.0, 0.0) + 1.0 - stay
                    xt[:, d] = x1[:, d]                   # the kept branch, weight kappa
                    Pk = self.posterior(xt, t, ema)
                    g = 1.0 - Pk[rows, d, x1[:, d]].astype(np.float64)
                    # in tau = -log(1 - s): ds = (1 - s) dtau, s / (1 - s) ds = s dtau
                    total -= ws * ((1.0 - s) * f + s * g)
                    if s == nodes[-1]:
                        tail += (1.0 - s) * f + s * g
        if not mask:
            # the integrand at the last node, per unit tau: what the bound would lose
            # per unit of tau beyond ELBO_TAU_MAX (0 when p(x1 | x) reaches 1)
            self.elbo_tail_ = float(tail.mean() / mc)
        return total / mc

    # -- evaluation --------------------------------------------------------------------
    @within_threads
    def evaluate(self, data=None, n=20000, bins=16, pairs=20, seed=0, steps=None,
                 elbo_n=2000):
        """TV between coarse histograms (bins per axis) of n samples and n fresh data
        points, its floor over ``pairs`` data-data pairs, and on a named pmf the mean
        ELBO of elbo_n fresh points against their exact mean log p."""
        self._check_fitted()
        data = self._data(data if data is not None else self.data_)
        x = self.sample(n, seed=seed + 1, steps=steps)
        fresh = data.draw(n, np.random.default_rng([seed, 8]))
        tv = total_variation(x, fresh, self.vocab_size, bins)
        floor, floor_sd = tv_floor(data, n, pairs, bins, seed)
        out = {"tv": tv, "tv_floor": floor, "tv_floor_sd": floor_sd, "tv_ratio": tv / floor,
               "n": n, "bins": bins, "pairs": pairs, "sample_steps": steps or self.sample_steps}
        if data.pmf is not None and elbo_n:
            pts = data.draw(elbo_n, np.random.default_rng([seed, 9]))
            e = self.elbo(pts, seed=seed)
            logp = data.log_prob(pts)
            out.update(elbo=float(e.mean()), logp=float(logp.mean()),
                       elbo_gap=float(logp.mean() - e.mean()), entropy=data.entropy(),
                       **({} if self.source == dfm.MASK else {"elbo_tail": self.elbo_tail_}),
                       elbo_n=elbo_n)
        return out

