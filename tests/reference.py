"""What the tests share: independent float64 NumPy references of the network, the
loss, and a whole training step (path, forward, loss, backward, clipping, AdamW,
EMA), the finite-difference oracle, problem generators, and helpers that drive
the compiled step and the command line.  Test modules import from here, never
from each other (``conftest.py`` puts this folder on the path).

Dimension letters: B batch, D data dimension, F input features, H hidden width,
P number of parameters.
"""
import math
import os

import numpy as np
from hypothesis import HealthCheck, settings, strategies as st

from fmnumpy.nn import mlp
from fmnumpy.euclidean import step
from fmnumpy.nn.activations import ACTIVATIONS, RELU, SELU
from fmnumpy.cli.main import main
from fmnumpy.euclidean.paths import STRAIGHT
from fmnumpy.euclidean.stream import NO_LABELS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository
FIXTURES = os.path.join(REPO, "tests", "fixtures")

EPS = 1e-6           # central-difference step
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
KINKED = (RELU, SELU)       # sigma' jumps at z = 0: keep FD away from it
KINK_MARGIN = 1e-4
NAME = {code: name for name, code in ACTIVATIONS.items()}


def time_only(n_freq, dim):
    """``MLPSpec.feats`` of a network without Fourier features of x."""
    return (int(n_freq), 0, np.zeros((0, dim)))


# ---- an independent NumPy reference of the forward pass -------------------------------

# Klambauer et al.'s constants rounded to float32, as fmnumpy (and torch.nn.SELU on
# float32 tensors) applies them.
SELU_ALPHA = float(np.float32(1.6732632423543772))
SELU_SCALE = float(np.float32(1.0507009873554805))


def act_ref(z, kind):
    if kind == ACTIVATIONS["silu"]:
        return z / (1.0 + np.exp(-z))
    if kind == ACTIVATIONS["relu"]:
        return np.maximum(z, 0.0)
    if kind == ACTIVATIONS["selu"]:
        return np.where(z > 0, SELU_SCALE * z, SELU_SCALE * SELU_ALPHA * np.expm1(np.minimum(z, 0)))
    return np.tanh(z)


def directions_ref(D):
    """The axes e_a, then for a < b the diagonals (e_a + e_b) / sqrt 2, (e_a - e_b) / sqrt 2."""
    rows = list(np.eye(D))
    for a in range(D):
        for b in range(a + 1, D):
            rows += [(np.eye(D)[a] + np.eye(D)[b]) / math.sqrt(2.0),
                     (np.eye(D)[a] - np.eye(D)[b]) / math.sqrt(2.0)]
    return np.array(rows)


def features_ref(x, t, n_freq, x_freqs=0):
    """[x, sin/cos(pi 2^k b_j . x) for k < x_freqs and each direction, t, sin/cos(pi 2^k t)]."""
    cols = [x]
    for k in range(x_freqs):
        for b in directions_ref(x.shape[1]):
            p = math.pi * 2.0 ** k * (x @ b)
            cols += [np.sin(p)[:, None], np.cos(p)[:, None]]
    cols.append(t[:, None])
    for k in range(n_freq):
        w = math.pi * 2.0 ** k
        cols += [np.sin(w * t)[:, None], np.cos(w * t)[:, None]]
    return np.concatenate(cols, axis=1)                       # (B, F)


def mlp_ref(theta, sizes, kind, X):
    """-> v (B, D) and the list of hidden pre-activations."""
    h, zs = X, []
    layers = mlp.views(theta, sizes)
    for l, (W, b) in enumerate(layers):
        z = h @ W + b
        if l < len(layers) - 1:
            zs.append(z)
            h = act_ref(z, kind)
        else:
            h = z
    return h, zs


def cfm_loss_ref(theta, sizes, kind, n_freq, x0, x1, t, sigma_min, x_freqs=0):
    s = 1.0 - sigma_min
    xt = (1.0 - s * t[:, None]) * x0 + t[:, None] * x1
    ut = x1 - s * x0
    v, zs = mlp_ref(theta, sizes, kind, features_ref(xt, t, n_freq, x_freqs))
    return np.mean((v - ut) ** 2), zs


def central_diff(f, x, eps=EPS):
    """dF/dx by central differences for a scalar function f of the array x (in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def assert_grad_close(name, analytic, numeric, rtol=1e-6):
    """|analytic - numeric| <= rtol * (gradient scale) elementwise, printing the max diff."""
    diff = np.max(np.abs(analytic - numeric)) if analytic.size else 0.0
    scale = max(1.0, float(np.max(np.abs(numeric))) if numeric.size else 0.0)
    print(f"{name}: max |analytic - FD| = {diff:.3e} (scale {scale:.3e})")
    assert diff <= rtol * scale, f"{name}: max abs difference {diff:.3e} > {rtol * scale:.3e}"


# ---- problem generation --------------------------------------------------------------

def make_problem(seed, hidden, D, B, n_freq, dtype=np.float64, x_freqs=0):
    rng = np.random.default_rng(seed)
    sizes = mlp.layer_sizes(D, hidden, n_freq, 0, x_freqs)
    theta = mlp.init_params(sizes, rng, dtype=np.float64)
    # larger-than-init weights so the nonlinearity is exercised, still O(1) outputs
    theta *= 1.5
    x0 = rng.standard_normal((B, D))
    x1 = rng.standard_normal((B, D)) * 2.0
    t = rng.random(B)
    cast = lambda a: np.ascontiguousarray(a, dtype=dtype)      # noqa: E731
    return sizes, cast(theta), cast(x0), cast(x1), cast(t)


def no_noise(x0):
    """The empty (0, D) noise the straight and cosine paths take."""
    return np.zeros((0, x0.shape[1]), dtype=x0.dtype)


def compiled_loss_and_grad(theta, sizes, kind, n_freq, x0, x1, t, sigma, dtheta=None,
                           path=STRAIGHT, eps=None, x_freqs=0):
    """step.loss_and_grad with buffers (B, D) xt, ut, dv and an mlp.Workspace; sigma is
    the path's parameter (sigma_min of the straight path)."""
    B, D = x0.shape
    ws = mlp.Workspace(sizes, B, dtype=theta.dtype)
    xt, ut, dv = (np.zeros((B, D), dtype=theta.dtype) for _ in range(3))
    if dtheta is None:
        dtheta = np.zeros_like(theta)
    eps = no_noise(x0) if eps is None else eps
    feats = (n_freq, x_freqs, mlp.feature_directions(D)) if x_freqs else time_only(n_freq, D)
    L = step.loss_and_grad(theta, dtheta, (sizes, kind, feats), (path, sigma),
                           (x0, x1, t, eps, NO_LABELS), (xt, ut, dv) + ws.buffers())
    return L, dtheta


problem = dict(
    seed=st.integers(0, 2**31 - 1),
    hidden=st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple),
    D=st.integers(1, 3),
    B=st.integers(1, 5),
    n_freq=st.integers(0, 2),
)
kinds = st.sampled_from(sorted(ACTIVATIONS.values()))


def away_from_kinks(zs, kind):
    if kind not in KINKED:
        return True
    return all(np.min(np.abs(z)) > KINK_MARGIN for z in zs if z.size)


# ---- a whole training step, in float64 NumPy (llm.c's habit) ---------------------------

def dact_ref(z, kind):
    """sigma'(z) of :func:`act_ref`, written from the formulas (not from fmnumpy)."""
    if kind == ACTIVATIONS["silu"]:
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 + z * (1.0 - s))
    if kind == ACTIVATIONS["relu"]:
        return (z > 0).astype(z.dtype)
    if kind == ACTIVATIONS["selu"]:
        return np.where(z > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0)))
    return 1.0 - np.tanh(z) ** 2


def grad_ref(theta, sizes, kind, n_freq, x0, x1, t, sigma_min):
    """(L, dL/dtheta) of the straight-path CFM loss by backprop in matrix form."""
    s = 1.0 - sigma_min
    xt = (1.0 - s * t[:, None]) * x0 + t[:, None] * x1
    ut = x1 - s * x0
    X = features_ref(xt, t, n_freq)
    layers = mlp.views(theta, sizes)
    hs, zs, h = [], [], X
    for l, (W, b) in enumerate(layers):
        hs.append(h)
        z = h @ W + b
        zs.append(z)
        h = act_ref(z, kind) if l < len(layers) - 1 else z
    B, D = ut.shape
    dz = 2.0 * (h - ut) / (B * D)                               # dL/dv
    grads = []
    for l in range(len(layers) - 1, -1, -1):
        W, _ = layers[l]
        grads.append((hs[l].T @ dz, dz.sum(axis=0)))
        if l > 0:
            dz = (dz @ W.T) * dact_ref(zs[l - 1], kind)
    g = np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in grads[::-1]])
    return float(np.mean((h - ut) ** 2)), g


def train_step_ref(theta, m, v, ema, sizes, kind, n_freq, batch, k, opt, lr, ema_decay,
                   sigma_min=0.0):
    """One step, written from the equations: gradient, clipping to ``opt.clip``,
    Adam/AdamW step k (Kingma & Ba, Loshchilov & Hutter), EMA.  Returns the new
    (theta, m, v, ema) and the loss; inputs are not changed."""
    x0, x1, t = batch
    L, g = grad_ref(theta, sizes, kind, n_freq, x0, x1, t, sigma_min)
    norm = np.sqrt(np.sum(g * g))
    if opt.clip > 0 and norm > opt.clip:
        g = g * (opt.clip / (norm + 1e-6))
    b1, b2 = opt.betas
    theta = theta.copy()
    if opt.weight_decay:
        if opt.decoupled:
            theta *= 1.0 - lr * opt.weight_decay
        else:
            g = g + opt.weight_decay * theta
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** k), v / (1 - b2 ** k)
    theta -= lr * mhat / (np.sqrt(vhat) + opt.eps)
    ema = ema_decay * ema + (1 - ema_decay) * theta
    return theta, m, v, ema, L


# ---- the command line --------------------------------------------------------------------

TINY = ["--hidden", "8,8", "--batch-size", "16", "--no-plots", "--no-progress", "--warmup", "5"]


def run(argv):
    """main(argv) -> exit code, also when argparse exits."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


def assert_one_line_error(capsys, code, *words):
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code not in (0, None), err
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
