"""The plain-PyTorch reference of ``bench/README.md`` (Workloads): what a user would write
instead of fmnumpy.  Usable on ``device="cpu"`` or ``"cuda"``.

Dimension letters: B batch (or particles), D data dimension, P parameters.

    model  = Linear(3, H) act Linear(H, H) act ... Linear(H, D)   nn.Sequential
    xt     = (1 - t) x0 + t x1,  ut = x1 - x0
    loss   = mean (model(concat(xt, t)) - ut)^2
    Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-8), PyTorch's default implementation

Weights come from fmnumpy's flat buffer: layer l stores W_l (n_in, n_out) row-major,
then b_l (n_out,); ``nn.Linear.weight`` is (n_out, n_in), so it receives W_l^T.

Data: a step takes (x0, x1, t) as NumPy arrays or tensors.  The CPU benchmark feeds
both libraries from the same ``fmnumpy.train.BatchStream`` (identical batches and
identical drawing cost); :class:`TorchBatchStream` draws the same distribution with
torch ops on the device, for a GPU run where a host draw would be the bottleneck.
"""
import math

import numpy as np
import torch
from torch import nn

from fmnumpy.nn.mlp import feature_directions

ACTIVATIONS = {"silu": nn.SiLU, "selu": nn.SELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class FourierInput(nn.Module):
    """concat(x, t) (B, D + 1) -> [x, sin(w_k b_j . x), cos(w_k b_j . x) (k < K, each
    direction b_j), t]: fmnumpy's Fourier features of x (``mlp.input_features``,
    w_k = pi 2^k), written with torch ops; B (J, D) holds the directions."""

    def __init__(self, directions, x_freqs):
        super().__init__()
        d = torch.as_tensor(np.asarray(directions, dtype=np.float32))
        w = torch.tensor([math.pi * 2.0 ** k for k in range(x_freqs)], dtype=torch.float32)
        self.register_buffer("P", (w[:, None, None] * d[None]).reshape(-1, d.shape[1]).T)

    def forward(self, xt):
        x, t = xt[:, :-1], xt[:, -1:]
        p = x @ self.P                                   # (B, K J): k-major, as fmnumpy
        waves = torch.stack([torch.sin(p), torch.cos(p)], dim=2).reshape(x.shape[0], -1)
        return torch.cat([x, waves, t], dim=1)


def build_model(sizes, activation, theta=None, device="cpu", dtype=torch.float32,
                x_freqs=0):
    """nn.Sequential for layer sizes (F, H_1, ..., H_k, D) on the input concat(x, t)
    (F = D + 1), or with ``x_freqs`` K its Fourier features first (F = D + 2 K D^2 + 1,
    :class:`FourierInput`); weights from fmnumpy's flat ``theta`` (P,) when given."""
    sizes = [int(s) for s in sizes]
    D = sizes[-1]
    if sizes[0] != D + 2 * x_freqs * D * D + 1:
        raise ValueError(f"only concat(x, t) with x_freqs={x_freqs} Fourier features is "
                         f"supported, got sizes {sizes}")
    layers = [FourierInput(feature_directions(D), x_freqs)] if x_freqs else []
    for l in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[l], sizes[l + 1]))
        if l < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation.lower()]())
    model = nn.Sequential(*layers).to(device=device, dtype=dtype)
    if theta is not None:
        load_theta(model, theta)
    return model


def linears(model):
    return [m for m in model if isinstance(m, nn.Linear)]


@torch.no_grad()
def load_theta(model, theta):
    """Copy fmnumpy's flat (P,) buffer into the model: weight <- W^T, bias <- b."""
    theta = np.asarray(theta)
    p = 0
    for lin in linears(model):
        n_out, n_in = lin.weight.shape
        W = theta[p:p + n_in * n_out].reshape(n_in, n_out)
        p += n_in * n_out
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
        lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(theta[p:p + n_out])))
        p += n_out
    if p != theta.shape[0]:
        raise ValueError(f"theta has {theta.shape[0]} entries, the model needs {p}")


def flatten(model, grad=False):
    """The model's parameters (or their gradients) in fmnumpy's layout, (P,) NumPy."""
    parts = []
    for lin in linears(model):
        W = lin.weight.grad if grad else lin.weight
        b = lin.bias.grad if grad else lin.bias
        parts += [W.detach().T.reshape(-1), b.detach().reshape(-1)]
    return torch.cat(parts).cpu().numpy()


def as_tensor(a, device):
    """A NumPy array as a tensor on ``device`` (zero-copy on the CPU)."""
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    return a.to(device, non_blocking=True)


def cfm_loss(model, x0, x1, t):
    """Path, forward and loss: x0, x1 (B, D), t (B,) -> mean (v - ut)^2."""
    tc = t[:, None]                                     # (B, 1)
    xt = (1 - tc) * x0 + tc * x1                        # (B, D)
    ut = x1 - x0                                        # (B, D)
    v = model(torch.cat([xt, tc], dim=1))               # (B, D)
    return (v - ut).square().mean()


def loss_and_grad(model, x0, x1, t):
    """(loss as a float, gradient (P,) in fmnumpy's layout) on one batch."""
    dev = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    loss = cfm_loss(model, *(as_tensor(a, dev) for a in (x0, x1, t)))
    loss.backward()
    return loss.item(), flatten(model, grad=True)


class Trainer:
    """One flow-matching training step with torch.optim.Adam (default settings
    otherwise: on the CPU that is its for-loop implementation)."""

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.model = model
        self.device = next(model.parameters()).device
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps,
                                    weight_decay=0.0)

    def step(self, x0, x1, t):
        """Returns the loss as a 0-d tensor (no host synchronisation)."""
        dev = self.device
        loss = cfm_loss(self.model, as_tensor(x0, dev), as_tensor(x1, dev), as_tensor(t, dev))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


# ---- data drawn with torch ops ----------------------------------------------------------

def two_spirals(n, generator, device="cpu", dtype=torch.float32):
    """``2spirals`` as in the workloads of bench/README.md / fmnumpy.datasets.two_spirals, drawn with torch:
    s = sqrt(U) 540 (2 pi / 360); arm (-cos(s) s + U/2, sin(s) s + U/2) and its
    negation; / 3; + N(0, 0.1^2).  (Rows are not shuffled: the batch is a set.)"""
    kw = dict(generator=generator, device=device, dtype=dtype)
    m = (n + 1) // 2
    s = torch.sqrt(torch.rand(m, 1, **kw)) * (540.0 * 2 * math.pi / 360.0)
    arm = torch.cat([-torch.cos(s) * s + torch.rand(m, 1, **kw) * 0.5,
                     torch.sin(s) * s + torch.rand(m, 1, **kw) * 0.5], dim=1)
    x = torch.cat([arm, -arm], dim=0)[:n] / 3.0
    return x + torch.randn(x.shape, **kw) * 0.1


class TorchBatchStream:
    """(x0, x1, t) for each step, drawn on ``device`` in chunks of ``chunk`` steps at a
    time, the scheme of fmnumpy.train.BatchStream (2spirals only)."""

    def __init__(self, batch, seed, device="cpu", chunk=64, dim=2):
        self.batch, self.chunk, self.dim, self.device = batch, chunk, dim, device
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self.k = -1

    def batch_at(self, step):
        k, r = divmod(step, self.chunk)
        if k != self.k:
            C, B, kw = self.chunk, self.batch, dict(generator=self.gen, device=self.device)
            self.x1 = two_spirals(C * B, self.gen, self.device).reshape(C, B, self.dim)
            self.x0 = torch.randn(C, B, self.dim, **kw)
            self.t = torch.rand(C, B, **kw)
            self.k = k
        return self.x0[r], self.x1[r], self.t[r]


# ---- sampling ---------------------------------------------------------------------------

@torch.no_grad()
def integrate(model, x0, method="rk4", steps=100):
    """Solve dx/dt = model(concat(x, t)) from t = 0 to 1 with ``steps`` fixed steps of
    Euler or classical RK4.  x0 (B, D) tensor -> x(1) (B, D)."""
    x = x0.clone()
    h = 1.0 / steps
    tcol = torch.empty(x.shape[0], 1, dtype=x.dtype, device=x.device)   # (B, 1)

    def v(x, t):
        tcol.fill_(t)
        return model(torch.cat([x, tcol], dim=1))

    for n in range(steps):
        t = n * h
        if method == "euler":
            x = x + h * v(x, t)
        elif method == "rk4":
            k1 = v(x, t)
            k2 = v(x + (0.5 * h) * k1, t + 0.5 * h)
            k3 = v(x + (0.5 * h) * k2, t + 0.5 * h)
            k4 = v(x + h * k3, t + h)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        else:
            raise ValueError(f"unknown method {method!r}; choose euler or rk4")
    return x


def synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
