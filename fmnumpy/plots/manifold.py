"""Pictures of flows on the sphere S^2 and the torus T^2 (an edge module, like
``plots.py``): samples in the equal-area Mollweide map and a 3D view, the torus
as a periodic square, the flow as a GIF, the density map.

Dimension letters: N points, K + 1 recorded states.
"""
import numpy as np

from fmnumpy.errors import FmnumpyError
from fmnumpy.manifold.datasets import xyz_to_lonlat
from fmnumpy.manifold.manifolds import TWO_PI
from fmnumpy.plots.euclidean import (DATA_COLOR, GIF_DPI, SAMPLE_COLOR, _figure,
    _marker_size, _save, _time_labels, write_gif)

PI_TICKS = (0.0, np.pi / 2, np.pi, 3 * np.pi / 2, TWO_PI)
PI_LABELS = ("0", "π/2", "π", "3π/2", "2π")


def _check(points, dim, name):
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != dim:
        raise FmnumpyError(f"{name} must have shape (N, {dim}), got {points.shape}")
    return points


def _mollweide(fig, spec, title):
    ax = fig.add_subplot(spec, projection="mollweide")
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.set_xticklabels([])
    ax.set_title(title)
    return ax


def _on_map(ax, x, color, size, alpha=0.6):
    lon, lat = xyz_to_lonlat(x)
    return ax.scatter(lon, lat, s=size, c=color, alpha=alpha, linewidths=0, rasterized=True)


def _square(ax, title):
    ax.set_xlim(0, TWO_PI)
    ax.set_ylim(0, TWO_PI)
    ax.set_aspect("equal")
    ax.set_xticks(PI_TICKS, PI_LABELS)
    ax.set_yticks(PI_TICKS, PI_LABELS)
    ax.set_xlabel("θ₁ (periodic)")
    ax.set_ylabel("θ₂ (periodic)")
    ax.set_title(title)


def sphere_samples(path, samples, data=None, title="samples"):
    """Samples (and data) on S^2 in the Mollweide map, and the samples on a 3D globe."""
    x = _check(samples, 3, "samples")
    panels = 3 if data is not None else 2
    fig = _figure(4.2 * panels, 3.4)
    gs = fig.add_gridspec(1, panels)
    s = _marker_size(len(x))
    _on_map(_mollweide(fig, gs[0], title), x, SAMPLE_COLOR, s)
    if data is not None:
        _on_map(_mollweide(fig, gs[1], "data"), _check(data, 3, "data"), DATA_COLOR, s)
    ax = fig.add_subplot(gs[-1], projection="3d")
    u = np.linspace(0, TWO_PI, 97)
    for lat in np.linspace(-np.pi / 3, np.pi / 3, 5):             # parallels
        ax.plot(np.cos(lat) * np.cos(u), np.cos(lat) * np.sin(u), np.full_like(u, np.sin(lat)),
                c="0.85", lw=0.5)
    for lon in np.linspace(0, np.pi, 6, endpoint=False):          # meridians
        ax.plot(np.cos(u) * np.cos(lon), np.cos(u) * np.sin(lon), np.sin(u), c="0.85", lw=0.5)
    view = np.array([1.0, 1.0, 0.7]) / np.linalg.norm([1.0, 1.0, 0.7])
    front = x @ view > 0                                  # the hemisphere facing the viewer
    ax.scatter(*x[front].T, s=2 * s, c=SAMPLE_COLOR, alpha=0.7, linewidths=0,
               depthshade=False)
    ax.view_init(elev=float(np.degrees(np.arcsin(view[2]))), azim=45)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.set_box_aspect((1, 1, 1), zoom=1.35)
    ax.set_axis_off()
    ax.set_title("3D view (front half)")
    return _save(fig, path)


def torus_samples(path, samples, data=None, title="samples"):
    """Samples (and data) on T^2 drawn in the periodic square [0, 2 pi)^2."""
    x = _check(samples, 2, "samples")
    panels = 2 if data is not None else 1
    fig = _figure(4.0 * panels, 4.0)
    axes = np.atleast_1d(fig.subplots(1, panels))
    s = _marker_size(len(x))
    axes[0].scatter(x[:, 0], x[:, 1], s=s, c=SAMPLE_COLOR, alpha=0.6, linewidths=0)
    _square(axes[0], title)
    if data is not None:
        d = _check(data, 2, "data")
        axes[1].scatter(d[:, 0], d[:, 1], s=s, c=DATA_COLOR, alpha=0.6, linewidths=0)
        _square(axes[1], "data")
    return _save(fig, path)


def samples(path, manifold, points, data=None, title="samples"):
    """``sphere_samples`` or ``torus_samples`` by the manifold's name."""
    fn = {"sphere": sphere_samples, "torus": torus_samples}.get(manifold)
    if fn is None:
        raise FmnumpyError(f"no pictures for the {manifold!r} manifold")
    return fn(path, points, data, title)


def flow_gif(path, manifold, traj, fps=20, hold_last=10):
    """Animated GIF of the points flowing from the uniform prior (t = 0) to the data
    (t = 1): traj (K + 1, N, D) in the Mollweide map (sphere) or the square (torus)."""
    traj = np.asarray(traj, dtype=np.float64)
    if traj.ndim != 3 or traj.shape[0] < 1:
        raise FmnumpyError(f"traj must have shape (K + 1, N, D), got {traj.shape}")
    fig = _figure(5.0 if manifold == "sphere" else 4.0, 3.0 if manifold == "sphere" else 4.0,
                  dpi=GIF_DPI)
    s = _marker_size(traj.shape[1])
    if manifold == "sphere":
        _check(traj[0], 3, "traj[0]")
        ax = _mollweide(fig, 111, "")
        cloud = _on_map(ax, traj[0], SAMPLE_COLOR, s)
        offsets = [np.stack(xyz_to_lonlat(x), axis=1) for x in traj]
    else:
        _check(traj[0], 2, "traj[0]")
        ax = fig.subplots()
        cloud = ax.scatter(traj[0, :, 0], traj[0, :, 1], s=s, c=SAMPLE_COLOR, alpha=0.6,
                           linewidths=0)
        _square(ax, "")
        offsets = list(traj)
    frames = []
    for state, label in zip(offsets, _time_labels(np.linspace(0, 1, traj.shape[0]))):
        cloud.set_offsets(state)
        ax.set_title(label)
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy())
    fig.clear()
    return write_gif(path, frames, fps, hold_last)


def density_map(path, manifold, grid, true_logp=None, log_scale=False, points=None):
    """The model's density p = exp(log p) on ``ManifoldFlowMatcher.density_grid``'s
    grid (a, b, logp, cell_area), beside the exact density when given (same grid).
    ``log_scale``: draw log p instead (for peaked densities); ``points``: unit vectors
    (N, 3) of the sphere drawn on top (say held-out events)."""
    a, b, logp, _ = grid
    panels = [("model density", logp)] + ([("exact density", true_logp)]
                                          if true_logp is not None else [])
    shown = [lp if log_scale else np.exp(lp) for _, lp in panels]
    vmax = max(float(np.nanmax(v)) for v in shown)
    vmin = min(float(np.nanmin(v)) for v in shown) if log_scale else 0.0
    sphere = manifold == "sphere"
    fig = _figure(4.6 * len(panels) if sphere else 4.2 * len(panels), 3.0 if sphere else 4.0)
    gs = fig.add_gridspec(1, len(panels))
    for k, ((title, _), p) in enumerate(zip(panels, shown)):
        if sphere:
            ax = _mollweide(fig, gs[k], title)
            lon = np.where(a > np.pi, a - TWO_PI, a)          # map longitude to [-pi, pi)
            order = np.argsort(lon)
            im = ax.pcolormesh(lon[order], np.arcsin(b), p[:, order], shading="nearest",
                               cmap="viridis", vmin=vmin, vmax=vmax, rasterized=True)
            if points is not None:
                plon, plat = xyz_to_lonlat(points)
                ax.scatter(plon, plat, s=2, c="white", edgecolors="none", alpha=0.7)
        else:
            ax = fig.add_subplot(gs[k])
            im = ax.imshow(p, origin="lower", extent=(0, TWO_PI, 0, TWO_PI), cmap="viridis",
                           vmin=vmin, vmax=vmax, interpolation="nearest")
            _square(ax, title)
    fig.colorbar(im, ax=fig.axes, shrink=0.8,
                 label="log p (per unit area)" if log_scale else "p (per unit area)")
    return _save(fig, path)
