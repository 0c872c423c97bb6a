"""Pictures of discrete flow matching on 2D tokens (an edge module, like plots.py):
samples against data as 2D histograms, the flow of tokens as a GIF, the ELBO map.

A 2D token (i, j) is the cell in column i, row j of a V x V image.  With the mask
source a masked coordinate is drawn in an extra strip past the grid's edge (column
or row V), so a frame shows where every sample is, known or not.
"""
import numpy as np

from fmnumpy.errors import FmnumpyError
from fmnumpy.plots.euclidean import GIF_DPI, _figure, _save, write_gif

CMAP = "magma"


def _counts(x, size):
    """(size, size) counts of tokens x (N, 2), indexed [row j, column i]."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise FmnumpyError(f"the token pictures need 2 positions, got shape {x.shape}")
    h = np.zeros((size, size))
    np.add.at(h, (x[:, 1], x[:, 0]), 1.0)
    return h


def _show(ax, img, vocab, title, vmax=None):
    ax.imshow(img, origin="lower", cmap=CMAP, interpolation="nearest", vmin=0.0, vmax=vmax,
              extent=(-0.5, img.shape[1] - 0.5, -0.5, img.shape[0] - 0.5))
    if img.shape[0] > vocab:                       # the mask strip
        ax.axhline(vocab - 0.5, color="0.6", linewidth=0.8)
        ax.axvline(vocab - 0.5, color="0.6", linewidth=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def histograms(path, samples, data, vocab, title="samples"):
    """Data and samples (N, 2) as 2D histograms of the V x V grid, side by side, on one
    colour scale."""
    hs, hd = _counts(samples, vocab), _counts(data, vocab)
    vmax = max(hs.max(), hd.max())
    fig = _figure(8.0, 4.2)
    a, b = fig.subplots(1, 2)
    _show(a, hd, vocab, f"data ({len(data):,})", vmax)
    _show(b, hs, vocab, f"{title} ({len(samples):,})", vmax)
    return _save(fig, path)


def token_flow_gif(path, frames, vocab, fps=8, hold_last=8):
    """GIF of the tokens from t = 0 to 1: frames [(t, x (N, 2)), ...] as histograms,
    masked coordinates (token V) in the strip past the edge."""
    if not frames:
        raise FmnumpyError("no frames to animate")
    size = vocab + int(max(int(np.max(x)) for _, x in frames) >= vocab)
    fig = _figure(4.0, 4.0, dpi=GIF_DPI)
    ax = fig.subplots()
    images = []
    for t, x in frames:
        h = _counts(x, size)
        ax.clear()
        _show(ax, np.sqrt(h), vocab, f"t = {t:.2f}", np.sqrt(h[:vocab, :vocab].max() + 1))
        fig.canvas.draw()
        images.append(np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy())
    fig.clear()
    return write_gif(path, images, fps, hold_last)


def elbo_map(path, elbo, logp=None, title="ELBO (nats)"):
    """The ELBO over the whole V x V grid (V, V) indexed [i, j], beside the true log p
    when known, on one colour scale (cells of probability 0 left blank)."""
    panels = [(elbo, title)] + ([(logp, "true log p (nats)")] if logp is not None else [])
    finite = np.concatenate([np.ravel(p[np.isfinite(p)]) for p, _ in panels])
    lo, hi = np.percentile(finite, 1), finite.max()
    fig = _figure(4.4 * len(panels), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (img, name) in zip(axes, panels):
        im = ax.imshow(np.where(np.isfinite(img), img, np.nan).T, origin="lower", cmap="viridis",
                       vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.85)
    return _save(fig, path)
