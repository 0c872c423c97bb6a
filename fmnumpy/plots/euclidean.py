"""Pictures of a flow: samples, loss, velocity field, trajectories, GIF, density, bars.

At the edge of the package: imports numpy, matplotlib and imageio; no core module
imports it.  Each function takes plain arrays or callables, writes one file (making
its parent folders) and returns the path as a string.  Figures are
``matplotlib.figure.Figure`` objects with their own Agg canvas, never pyplot, so no
global state is kept, nothing leaks over many calls, and the user's backend is untouched.

Convention: prior x0 ~ N(0, I) at t = 0, data x1 at t = 1, dx/dt = v(x, t) from 0 to 1.
Dimension letters: N points, D data dim, K solver steps (K + 1 states), M grid points.
"""
from __future__ import annotations

import math
import os

import imageio.v3 as iio
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from fmnumpy.errors import FmnumpyError

DPI = 100                 # still pictures
GIF_DPI = 80              # animation frames: 4 x 4 inches -> 320 x 320 pixels
SAMPLE_COLOR = "C0"
DATA_COLOR = "C1"
BACKGROUND_DATA = "0.75"  # reference data drawn behind another layer


# --------------------------------------------------------------------------- helpers

def _figure(width, height, dpi=DPI, layout="constrained"):
    """A pyplot-free figure with its own Agg canvas (freed when dropped).

    ``layout="compressed"`` packs rows of equal-aspect panels without gaps.
    """
    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _out_path(path):
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return path


def _save(fig, path):
    """Write ``fig`` to ``path``; the format follows the extension (png if none)."""
    path = _out_path(path)
    fmt = None if os.path.splitext(path)[1] else "png"
    fig.savefig(path, format=fmt)
    fig.clear()
    return path


def _points(name, a):
    """``a`` as a float array of shape (N, D)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise FmnumpyError(f"{name} must be a 2-D array (N, D); got shape {a.shape}")
    return a


def _reference(data, d, dims):
    """Reference data (N', D) projected on ``dims`` -> (N', 2), or None."""
    if data is None:
        return None
    data = _points("data", data)
    if data.shape[1] != d:
        raise FmnumpyError(f"data has dimension {data.shape[1]} but the points have {d}")
    return data[:, dims]


def _trajectory(traj):
    """``traj`` as a float array of shape (K + 1, N, D)."""
    traj = np.asarray(traj, dtype=np.float64)
    if traj.ndim != 3 or traj.shape[0] < 1:
        raise FmnumpyError(f"traj must be a 3-D array (K + 1, N, D); got shape {traj.shape}")
    return traj


def _dims(dims, d):
    """Validate a pair of coordinate indices into a D-dimensional point."""
    try:
        i, j = (int(k) for k in dims)
    except (TypeError, ValueError):
        raise FmnumpyError(f"dims must be a pair of coordinate indices; got {dims!r}") from None
    if not (0 <= i < d and 0 <= j < d) or i == j:
        raise FmnumpyError(f"dims {tuple(dims)} must be two different indices in [0, {d})")
    return i, j


def _limits(lim, *clouds):
    """Square axis limits ((x_lo, x_hi), (y_lo, y_hi)).

    ``lim`` is a half-width (float), a (lo, hi) pair used for both axes, or None:
    then the box around the finite points of ``clouds`` (each (..., 2)), 15 % margin.
    The box spans the 0.1 %..99.9 % quantiles, so a few diverged samples do not
    shrink everything else to a dot.
    """
    if lim is not None:
        if np.ndim(lim) == 0:
            lim = float(lim)
            if not lim > 0:
                raise FmnumpyError(f"lim must be positive; got {lim}")
            return (-lim, lim), (-lim, lim)
        lo, hi = (float(v) for v in lim)
        if not lo < hi:
            raise FmnumpyError(f"lim must be (lo, hi) with lo < hi; got {lim!r}")
        return (lo, hi), (lo, hi)
    pts = np.concatenate([c.reshape(-1, 2) for c in clouds if c is not None])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return (-4.0, 4.0), (-4.0, 4.0)
    lo, hi = np.quantile(pts, [0.001, 0.999], axis=0)
    center = (lo + hi) / 2
    half = float((hi - lo).max()) / 2 * 1.15
    half = half if half > 0 else 1.0                            # one point, or all equal
    return ((center[0] - half, center[0] + half), (center[1] - half, center[1] + half))


def _frame_axes(ax, limits, dims):
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_aspect("equal")
    ax.set_xlabel(f"x[{dims[0]}]")
    ax.set_ylabel(f"x[{dims[1]}]")


def _marker_size(n):
    """Point area that keeps a cloud of n points readable at any n."""
    return float(np.clip(4000.0 / max(n, 1), 0.5, 12.0))


def _grid(lim, n_grid):
    """Cell centres of an n_grid x n_grid tiling of the square box: (n_grid,) and (M, 2).

    Centres rather than edges: an arrow drawn at a centre stays inside the box,
    and imshow with the box as extent puts each pixel exactly on its cell.
    """
    n_grid = int(n_grid)
    if n_grid < 2:
        raise FmnumpyError(f"n_grid must be at least 2; got {n_grid}")
    (lo, hi), _ = _limits(lim)                                  # same range on both axes
    g = lo + (np.arange(n_grid) + 0.5) * (hi - lo) / n_grid     # (n_grid,)
    xx, yy = np.meshgrid(g, g)
    return g, np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)  # (M, 2)


# --------------------------------------------------------------------------- pictures

def scatter(path, samples, data=None, title=None, dims=(0, 1), lim=None):
    """Scatter of samples (N, D), projected on coordinates ``dims``.

    With ``data`` (N', D) the reference data and the samples are drawn side by
    side on the same limits, so the two panels compare at a glance.
    """
    samples = _points("samples", samples)
    dims = _dims(dims, samples.shape[1])
    s = samples[:, dims]                                        # (N, 2)
    d = _reference(data, samples.shape[1], dims)                # (N', 2) or None
    # Limits come from the reference when there is one, so snapshots taken over
    # training share one frame and early outliers do not shrink the data.
    limits = _limits(lim, d if d is not None else s)

    panels = [("samples", s, SAMPLE_COLOR)]
    if d is not None:
        panels.insert(0, ("data", d, DATA_COLOR))
    fig = _figure(4.2 * len(panels), 4.5)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, pts, color) in zip(axes, panels):
        ax.scatter(pts[:, 0], pts[:, 1], s=_marker_size(len(pts)), c=color,
                   alpha=0.5, linewidths=0, rasterized=True)
        ax.set_title(f"{name} (n = {len(pts)})")
        _frame_axes(ax, limits, dims)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def classes(path, samples, data=None, title=None, lim=None, titles=None):
    """One panel per class: ``samples`` is a list of (n_k, 2) arrays, class k's
    samples; ``data`` (optional) the same list of fresh data, drawn behind them;
    ``titles`` the panels' titles (default "class k")."""
    if not samples:
        raise FmnumpyError("classes needs the samples of at least one class")
    pts = [_points(f"samples of class {k}", x)[:, :2] for k, x in enumerate(samples)]
    ref = None if data is None else [_points(f"data of class {k}", x)[:, :2]
                                     for k, x in enumerate(data)]
    limits = _limits(lim, *(ref if ref is not None else pts))
    cols = min(4, len(pts))
    rows = -(-len(pts) // cols)
    fig = _figure(3.0 * cols, 3.1 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for k, ax in enumerate(axes):
        if k >= len(pts):
            ax.axis("off")
            continue
        if ref is not None:
            ax.scatter(ref[k][:, 0], ref[k][:, 1], s=_marker_size(len(ref[k])), c=DATA_COLOR,
                       alpha=0.3, linewidths=0, rasterized=True, label="data")
        ax.scatter(pts[k][:, 0], pts[k][:, 1], s=_marker_size(len(pts[k])), c=SAMPLE_COLOR,
                   alpha=0.6, linewidths=0, rasterized=True, label="samples")
        ax.set_title(f"class {k}" if titles is None else titles[k])
        if k == 0:
            ax.legend(loc="upper left", fontsize="small", markerscale=3)
        _frame_axes(ax, limits, (0, 1))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def guidance_sweep(path, sweep, lim=None):
    """One panel per guidance weight: ``sweep`` maps w to (x (n, 2), y (n,)), the
    samples and the class each was asked for, coloured by class."""
    if not sweep:
        raise FmnumpyError("guidance_sweep needs at least one guidance weight")
    items = [(float(w), _points(f"samples at w = {w}", x)[:, :2], np.asarray(y))
             for w, (x, y) in sweep.items()]
    limits = _limits(lim, *(x for _, x, _ in items))
    fig = _figure(3.2 * len(items), 3.4)
    axes = fig.subplots(1, len(items), squeeze=False)[0]
    for ax, (w, x, y) in zip(axes, items):
        ax.scatter(x[:, 0], x[:, 1], s=_marker_size(len(x)), c=y, cmap="tab10",
                   vmin=0, vmax=9, alpha=0.6, linewidths=0, rasterized=True)
        ax.set_title(f"guidance w = {w:g}")
        _frame_axes(ax, limits, (0, 1))
    return _save(fig, path)


def scatter_epoch_name(epoch):
    """File name of the periodic training snapshot: ``scatter_epoch_0007.png``."""
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
        raise FmnumpyError(f"epoch must be a non-negative integer; got {epoch!r}")
    return f"scatter_epoch_{int(epoch):04d}.png"


def _moving_average(y, window):
    """Trailing mean over the last ``window`` values (fewer at the start), same length."""
    c = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(1, len(y) + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def loss_curve(path, losses, steps=None):
    """Loss (K,) against step: raw values faint, a moving average on top; log y."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or len(losses) == 0:
        raise FmnumpyError(f"losses must be a non-empty 1-D array; got shape {losses.shape}")
    steps = np.arange(len(losses)) if steps is None else np.asarray(steps, dtype=np.float64)
    if steps.shape != losses.shape:
        raise FmnumpyError(f"steps has shape {steps.shape} but losses has {losses.shape}")
    finite = np.isfinite(losses)
    window = int(np.clip(len(losses) // 50, 1, 500))

    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    ax.plot(steps, losses, color=SAMPLE_COLOR, alpha=0.3, linewidth=0.8, label="raw")
    if window > 1 and finite.any():
        smooth = _moving_average(losses[finite], window)
        ax.plot(steps[finite], smooth, color=SAMPLE_COLOR, linewidth=2.0,
                label=f"moving average ({window} steps)")
    # A flow-matching loss is a mean square, so it is positive; fall back to a
    # linear axis for anything else rather than drop points silently.
    if finite.any() and (losses[finite] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    return _save(fig, path)


def vector_field(path, velocity, times=(0.0, 0.25, 0.5, 0.75, 1.0), lim=4.0, n_grid=20,
                 data=None):
    """Quiver of the learned velocity v(x, t) on a grid, one panel per t.

    ``velocity(x, t)`` takes x (M, 2) float32 and a float t and returns (M, 2).
    Arrows show direction only (unit length) so slow regions stay readable; the
    colour is the speed |v|, on one scale shared by all panels.
    """
    times = [float(t) for t in np.atleast_1d(times)]
    if not times:
        raise FmnumpyError("times must list at least one time")
    g, x = _grid(lim, n_grid)
    limits = _limits(lim)
    data = _reference(data, 2, (0, 1))
    fields = []
    for t in times:
        v = np.asarray(velocity(x, t), dtype=np.float64)
        if v.shape != x.shape:
            raise FmnumpyError(f"velocity(x, t) must return shape {x.shape}; got {v.shape}")
        fields.append(v)                                        # (M, 2)
    speeds = [np.linalg.norm(v, axis=1) for v in fields]        # (M,) each
    finite = np.concatenate([sp[np.isfinite(sp)] for sp in speeds])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    norm = Normalize(vmin=0.0, vmax=vmax)

    fig = _figure(2.9 * len(times) + 0.9, 3.5, layout="compressed")
    axes = fig.subplots(1, len(times), squeeze=False)[0]
    arrow = 0.8 * (g[1] - g[0])                               # 80 % of a grid cell
    for ax, t, v, sp in zip(axes, times, fields, speeds):
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=_marker_size(len(data)) / 2,
                       c=BACKGROUND_DATA, linewidths=0, rasterized=True)
        unit = v / np.maximum(sp, 1e-12)[:, None]
        quiver = ax.quiver(x[:, 0], x[:, 1], unit[:, 0] * arrow, unit[:, 1] * arrow, sp,
                           cmap="viridis", norm=norm, angles="xy", scale_units="xy",
                           scale=1.0, width=0.005, pivot="mid")
        ax.set_title(f"t = {t:.2f}")
        _frame_axes(ax, limits, (0, 1))
        if ax is not axes[0]:
            ax.set_ylabel("")
    fig.colorbar(quiver, ax=list(axes), label="speed |v(x, t)|", fraction=0.02, pad=0.01)
    return _save(fig, path)


def trajectories(path, traj, n_show=200, data=None, dims=(0, 1), lim=None):
    """Paths of ``n_show`` particles through the solve; traj is (K + 1, N, D).

    Particles are picked evenly through the batch (deterministic, no RNG).
    """
    traj = _trajectory(traj)
    dims = _dims(dims, traj.shape[2])
    n = traj.shape[1]
    if int(n_show) < 1:
        raise FmnumpyError(f"n_show must be at least 1; got {n_show}")
    idx = np.unique(np.linspace(0, n - 1, min(int(n_show), n)).astype(int))
    paths = traj[:, idx][:, :, dims].transpose(1, 0, 2)         # (n_show, K + 1, 2)
    d = _reference(data, traj.shape[2], dims)                   # (N', 2) or None
    limits = _limits(lim, paths, d)

    fig = _figure(5.0, 5.0)
    ax = fig.subplots()
    if d is not None:
        ax.scatter(d[:, 0], d[:, 1], s=_marker_size(len(d)) / 2, c=BACKGROUND_DATA,
                   linewidths=0, rasterized=True, label="data")
    ax.add_collection(LineCollection(paths, colors="0.35", linewidths=0.6, alpha=0.4))
    ax.scatter(paths[:, 0, 0], paths[:, 0, 1], s=8, c="k", linewidths=0,
               label="start (t = 0, source)", zorder=3)
    ax.scatter(paths[:, -1, 0], paths[:, -1, 1], s=8, c=SAMPLE_COLOR, linewidths=0,
               label="end (t = 1, samples)", zorder=3)
    _frame_axes(ax, limits, dims)
    ax.set_title(f"trajectories ({len(idx)} of {n} particles, {traj.shape[0] - 1} steps)")
    legend = ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    handles = getattr(legend, "legend_handles", None) or legend.legendHandles  # mpl < 3.7
    for handle in handles:                                      # one marker size for all
        handle.set_sizes([20.0])
    return _save(fig, path)


def _time_labels(times):
    """``t = 0.50`` titles with enough decimals that consecutive times differ."""
    steps = np.abs(np.diff(times))
    steps = steps[steps > 0]
    decimals = 2 if steps.size == 0 else max(2, math.ceil(-math.log10(steps.min()) + 1e-9))
    return [f"t = {t:.{min(decimals, 6)}f}" for t in times]


def flow_gif(path, traj, times=None, fps=20, lim=None, dims=(0, 1), data=None, hold_last=10):
    """Animated GIF of the points flowing from the source (t = 0) to the data (t = 1).

    One frame per recorded state of traj (K + 1, N, D), titled with its time;
    ``times`` (K + 1,) defaults to an even grid on [0, 1].  The last frame stays
    on screen for ``hold_last`` extra frame periods before the loop restarts.
    It is written as one frame with a longer duration: the GIF writer (Pillow)
    merges identical consecutive frames anyway, so a GIF read back has K + 1 frames.
    """
    traj = _trajectory(traj)
    dims = _dims(dims, traj.shape[2])
    k1 = traj.shape[0]
    times = np.linspace(0.0, 1.0, k1) if times is None else np.asarray(times, dtype=np.float64)
    if times.shape != (k1,):
        raise FmnumpyError(f"times must have shape ({k1},) to match traj; got {times.shape}")
    if not fps > 0:
        raise FmnumpyError(f"fps must be positive; got {fps}")
    if int(hold_last) < 0:
        raise FmnumpyError(f"hold_last must be >= 0; got {hold_last}")
    pts = traj[:, :, dims]                                      # (K + 1, N, 2)
    d = _reference(data, traj.shape[2], dims)                   # (N', 2) or None
    # One fixed frame for the whole animation: every state (the noise at t = 0
    # is often wider than the data) and the data.
    limits = _limits(lim, pts, d)

    fig = _figure(4.0, 4.0, dpi=GIF_DPI)
    ax = fig.subplots()
    if d is not None:
        ax.scatter(d[:, 0], d[:, 1], s=_marker_size(len(d)) / 2, c=BACKGROUND_DATA,
                   linewidths=0)
    cloud = ax.scatter(pts[0, :, 0], pts[0, :, 1], s=_marker_size(pts.shape[1]),
                       c=SAMPLE_COLOR, alpha=0.6, linewidths=0)
    _frame_axes(ax, limits, dims)
    labels = _time_labels(times)
    frames = []
    for state, label in zip(pts, labels):
        cloud.set_offsets(state)
        ax.set_title(label)
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy())  # (H, W, 3)
    fig.clear()

    return write_gif(path, frames, fps, hold_last)


def write_gif(path, frames, fps, hold_last):
    """Write RGB frames (H, W, 3) as a looping GIF at ``fps``, the last one held for
    ``hold_last`` extra frame periods; returns the path."""
    frame_ms = int(round(1000.0 / fps))
    durations = [frame_ms] * len(frames)
    durations[-1] = frame_ms * (1 + int(hold_last))
    path = _out_path(path)
    iio.imwrite(path, np.stack(frames), extension=".gif", plugin="pillow",
                duration=durations if len(frames) > 1 else durations[0],  # Pillow: 1 frame, 1 int
                loop=0)
    return path


def density_heatmap(path, log_density, lim=4.0, n_grid=200, data=None):
    """Image of p(x) = exp(log p(x)) on a grid; ``log_density`` maps (M, 2) -> (M,)."""
    g, x = _grid(lim, n_grid)
    logp = np.asarray(log_density(x), dtype=np.float64)
    if logp.shape != (len(x),):
        raise FmnumpyError(f"log_density(x) must return shape ({len(x)},); got {logp.shape}")
    return density_image(path, g, g, logp.reshape(len(g), len(g)), data=data)


def density_image(path, gx, gy, logp, data=None):
    """Image of p = exp(logp) given on the cell centres gx (n,), gy (m,) of a grid,
    logp (m, n) with rows along y (``FlowMatcher.density_grid``'s output)."""
    if len(gx) < 2 or len(gy) < 2 or np.shape(logp) != (len(gy), len(gx)):
        raise FmnumpyError(f"density_image needs a grid of at least 2 x 2 cells and logp "
                           f"of shape ({len(gy)}, {len(gx)}); got {np.shape(logp)}")
    p = np.exp(logp)                                          # -inf -> 0, nan stays nan
    dx, dy = gx[1] - gx[0], gy[1] - gy[0]
    limits = ((gx[0] - dx / 2, gx[-1] + dx / 2), (gy[0] - dy / 2, gy[-1] + dy / 2))
    data = _reference(data, 2, (0, 1))

    fig = _figure(5.0, 4.3)
    ax = fig.subplots()
    im = ax.imshow(p, origin="lower", cmap="viridis", interpolation="nearest",
                   extent=(*limits[0], *limits[1]))
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=_marker_size(len(data)) / 4, c="w",
                   alpha=0.15, linewidths=0, rasterized=True)
    _frame_axes(ax, limits, (0, 1))
    ax.set_title("model density p(x)")
    fig.colorbar(im, ax=ax, label="p(x)", shrink=0.85)
    return _save(fig, path)


def _value_label(v):
    """Bar annotation: 3 significant digits, whole numbers from 100 up ("" if missing)."""
    if not np.isfinite(v):
        return ""
    return f"{v:.0f}" if 100 <= abs(v) < 1e6 else f"{v:.3g}"


def bar_chart(path, labels, series, ylabel, title, log=False):
    """Grouped bars: one group per label (L), one bar per series (S), values on top.

    ``series`` maps a name (e.g. "fmnumpy", "pytorch") to L values; NaN marks a
    missing measurement and is shown as "n/a".
    """
    labels = [str(lab) for lab in labels]
    if not labels:
        raise FmnumpyError("labels must name at least one group")
    if not series:
        raise FmnumpyError("series must hold at least one named list of values")
    values = {}
    for name, vals in series.items():
        v = np.asarray(vals, dtype=np.float64)
        if v.shape != (len(labels),):
            raise FmnumpyError(f"series {name!r} needs one value per label; got shape {v.shape}")
        values[name] = v
    if log and any((v[np.isfinite(v)] <= 0).any() for v in values.values()):
        raise FmnumpyError("log=True needs positive values")

    n_s = len(values)
    width = 0.8 / n_s
    pos = np.arange(len(labels))
    fig = _figure(max(6.0, 1.1 * len(labels) * max(n_s, 2) / 2 + 2.0), 4.5)
    ax = fig.subplots()
    for i, (name, v) in enumerate(values.items()):
        x = pos + (i - (n_s - 1) / 2) * width
        bars = ax.bar(x, np.where(np.isfinite(v), v, np.nan), width, label=name)
        ax.bar_label(bars, labels=[_value_label(y) for y in v], padding=2, fontsize="small")
        for xm in x[~np.isfinite(v)]:                           # missing: "n/a" on the axis
            ax.annotate("n/a", (xm, 0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize="small")
    # Headroom so the value labels above the tallest bar stay inside the axes; on a
    # log axis the bottom also sits below the smallest bar so every bar shows.
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    top = float(finite.max()) if finite.size else 0.0
    if log and finite.size:
        ax.set_yscale("log")
        ax.set_ylim(float(finite.min()) / 3.0, top * 3.0)
    else:
        ax.ticklabel_format(axis="y", style="plain")   # no "1e6" offset under the title
        if top > 0:
            ax.set_ylim(top=top * 1.15)
    ax.set_xticks(pos, labels, rotation=20 if max(len(s) for s in labels) > 10 else 0,
                  ha="right" if max(len(s) for s in labels) > 10 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, path)
