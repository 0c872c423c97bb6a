"""Every picture writes a non-empty file of the right type; bad shapes are refused."""
import gc

import imageio.v3 as iio
import numpy as np
import pytest

from fmnumpy.plots import euclidean as plots
from fmnumpy.errors import FmnumpyError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIF_MAGICS = (b"GIF87a", b"GIF89a")


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def _is_gif(path):
    with open(path, "rb") as f:
        return f.read(6) in GIF_MAGICS


def _blobs(rng, n=300, d=2):
    """Two Gaussian blobs at +-2 on the first axis, in d dimensions."""
    x = rng.normal(scale=0.4, size=(n, d))
    x[: n // 2, 0] += 2.0
    x[n // 2:, 0] -= 2.0
    return x.astype(np.float32)


def _straight_traj(rng, k=8, n=100, d=2):
    """States of the straight path xt = (1 - t) x0 + t x1: (K + 1, N, D)."""
    x0 = rng.normal(size=(n, d))
    x1 = _blobs(rng, n, d)
    t = np.linspace(0.0, 1.0, k + 1)[:, None, None]
    return ((1 - t) * x0 + t * x1).astype(np.float32)


def _rotation(x, t):
    """A rotational field that also pulls inward as t grows: (M, 2) -> (M, 2)."""
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 2
    assert isinstance(t, float)
    return np.stack([-x[:, 1], x[:, 0]], axis=1) - t * x


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --------------------------------------------------------------------------- scatter

def test_scatter_writes_png(tmp_path, rng):
    out = plots.scatter(tmp_path / "a" / "b" / "s.png", _blobs(rng), title="samples")
    assert out == str(tmp_path / "a" / "b" / "s.png")
    assert _is_png(out)


def test_scatter_with_data_and_projection_d4(tmp_path, rng):
    samples, data = _blobs(rng, d=4), _blobs(rng, d=4)
    out = plots.scatter(tmp_path / "s.png", samples, data=data, dims=(2, 3))
    assert _is_png(out)
    out = plots.scatter(tmp_path / "s2.png", samples, dims=(3, 0), lim=3.0)
    assert _is_png(out)


def test_scatter_survives_nonfinite_samples(tmp_path, rng):
    samples = _blobs(rng)
    samples[:5] = np.nan
    samples[5] = np.inf
    assert _is_png(plots.scatter(tmp_path / "s.png", samples))


def test_scatter_without_extension_writes_png_there(tmp_path, rng):
    out = plots.scatter(tmp_path / "noext", _blobs(rng))
    assert out == str(tmp_path / "noext") and _is_png(out)


@pytest.mark.parametrize("bad", [np.zeros(10), np.zeros((2, 3, 4))])
def test_scatter_rejects_non_2d(tmp_path, bad):
    with pytest.raises(FmnumpyError, match="2-D"):
        plots.scatter(tmp_path / "s.png", bad)


@pytest.mark.parametrize("dims", [(0, 2), (1, 1), (-1, 0), (0,), "ab"])
def test_scatter_rejects_bad_dims(tmp_path, rng, dims):
    with pytest.raises(FmnumpyError, match="dims"):
        plots.scatter(tmp_path / "s.png", _blobs(rng), dims=dims)


def test_scatter_rejects_mismatched_data(tmp_path, rng):
    with pytest.raises(FmnumpyError, match="dimension"):
        plots.scatter(tmp_path / "s.png", _blobs(rng, d=2), data=_blobs(rng, d=3))


def test_scatter_epoch_name():
    assert plots.scatter_epoch_name(7) == "scatter_epoch_0007.png"
    assert plots.scatter_epoch_name(12345) == "scatter_epoch_12345.png"
    with pytest.raises(FmnumpyError):
        plots.scatter_epoch_name(-1)


# --------------------------------------------------------------------------- loss

def test_loss_curve_writes_png(tmp_path, rng):
    losses = np.exp(-np.linspace(0, 3, 500)) + 0.05 * rng.random(500)
    assert _is_png(plots.loss_curve(tmp_path / "loss.png", losses))
    steps = np.arange(500) * 10
    assert _is_png(plots.loss_curve(tmp_path / "loss2.png", losses, steps=steps))
    assert _is_png(plots.loss_curve(tmp_path / "one.png", [1.0]))


def test_loss_curve_rejects_bad_shapes(tmp_path):
    with pytest.raises(FmnumpyError):
        plots.loss_curve(tmp_path / "l.png", np.ones((3, 3)))
    with pytest.raises(FmnumpyError, match="steps"):
        plots.loss_curve(tmp_path / "l.png", np.ones(5), steps=np.arange(4))


def test_moving_average_matches_loop():
    y = np.arange(10.0) ** 2
    got = plots._moving_average(y, 3)
    want = [y[max(0, i - 2): i + 1].mean() for i in range(10)]
    np.testing.assert_allclose(got, want)


# --------------------------------------------------------------------------- field

def test_vector_field_writes_png(tmp_path, rng):
    out = plots.vector_field(tmp_path / "vf.png", _rotation, data=_blobs(rng))
    assert _is_png(out)
    out = plots.vector_field(tmp_path / "vf1.png", _rotation, times=0.5, n_grid=5)
    assert _is_png(out)


def test_vector_field_rejects_wrong_velocity_shape(tmp_path):
    with pytest.raises(FmnumpyError, match="velocity"):
        plots.vector_field(tmp_path / "vf.png", lambda x, t: x[:, :1])


# --------------------------------------------------------------------------- trajectories

def test_trajectories_writes_png(tmp_path, rng):
    traj = _straight_traj(rng)
    assert _is_png(plots.trajectories(tmp_path / "tr.png", traj, n_show=30))
    traj4 = _straight_traj(rng, d=4)
    out = plots.trajectories(tmp_path / "tr4.png", traj4, data=_blobs(rng, d=4), dims=(1, 3))
    assert _is_png(out)


def test_trajectories_rejects_bad_shapes(tmp_path, rng):
    with pytest.raises(FmnumpyError, match="3-D"):
        plots.trajectories(tmp_path / "tr.png", _blobs(rng))
    with pytest.raises(FmnumpyError, match="dims"):
        plots.trajectories(tmp_path / "tr.png", _straight_traj(rng), dims=(0, 5))


# --------------------------------------------------------------------------- gif

def test_flow_gif_frames(tmp_path, rng):
    k = 8
    traj = _straight_traj(rng, k=k)
    out = plots.flow_gif(tmp_path / "g" / "flow.gif", traj, fps=10, data=_blobs(rng), hold_last=4)
    assert _is_gif(out)
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == k + 1
    assert frames.shape[1:] == (320, 320, 3)
    # The hold is the last frame's duration: (1 + hold_last) frame periods.
    meta = [iio.immeta(out, index=i) for i in (0, k)]
    assert meta[0]["duration"] == 100 and meta[1]["duration"] == 500


def test_flow_gif_projection_d4_and_times(tmp_path, rng):
    k = 5
    traj = _straight_traj(rng, k=k, d=4)
    times = np.array([0.0, 0.1, 0.3, 0.6, 0.9, 1.0])
    out = plots.flow_gif(tmp_path / "flow4.gif", traj, times=times, dims=(3, 1), hold_last=0)
    assert iio.imread(out, index=None).shape[0] == k + 1


def test_flow_gif_single_state(tmp_path, rng):
    out = plots.flow_gif(tmp_path / "one.gif", _straight_traj(rng, k=0))
    assert _is_gif(out) and iio.imread(out, index=None).shape[0] == 1


def test_flow_gif_rejects_bad_input(tmp_path, rng):
    with pytest.raises(FmnumpyError, match="3-D"):
        plots.flow_gif(tmp_path / "f.gif", _blobs(rng))
    with pytest.raises(FmnumpyError, match="times"):
        plots.flow_gif(tmp_path / "f.gif", _straight_traj(rng, k=4), times=[0.0, 1.0])


def test_time_labels_distinct_for_fine_grids():
    labels = plots._time_labels(np.linspace(0, 1, 401))
    assert labels[0] == "t = 0.000" and len(set(labels)) == 401
    assert plots._time_labels(np.array([0.0, 0.5, 1.0])) == ["t = 0.00", "t = 0.50", "t = 1.00"]


# --------------------------------------------------------------------------- density

def test_density_heatmap_writes_png(tmp_path, rng):
    def log_density(x):
        return -0.5 * np.sum(x.astype(np.float64) ** 2, axis=1) - np.log(2 * np.pi)

    out = plots.density_heatmap(tmp_path / "d.png", log_density, n_grid=50, data=_blobs(rng))
    assert _is_png(out)


def test_density_heatmap_rejects_wrong_shape(tmp_path):
    with pytest.raises(FmnumpyError, match="log_density"):
        plots.density_heatmap(tmp_path / "d.png", lambda x: x, n_grid=10)


# --------------------------------------------------------------------------- bars

def test_bar_chart_writes_png(tmp_path):
    labels = ["moons", "8gaussians", "checkerboard"]
    series = {"fmnumpy": [1.2, 3.4, 0.5], "pytorch": [2.0, float("nan"), 0.7]}
    assert _is_png(plots.bar_chart(tmp_path / "b.png", labels, series, "seconds", "train"))
    assert _is_png(plots.bar_chart(tmp_path / "bl.png", labels, series, "s", "t", log=True))


def test_bar_chart_all_missing_on_log_axis(tmp_path):
    out = plots.bar_chart(tmp_path / "b.png", ["a", "b"], {"x": [np.nan, np.nan]}, "s", "t", log=True)
    assert _is_png(out)


def test_bar_chart_rejects_mismatched_series(tmp_path):
    with pytest.raises(FmnumpyError, match="one value per label"):
        plots.bar_chart(tmp_path / "b.png", ["a", "b"], {"x": [1.0]}, "y", "t")
    with pytest.raises(FmnumpyError, match="positive"):
        plots.bar_chart(tmp_path / "b.png", ["a"], {"x": [0.0]}, "y", "t", log=True)


# --------------------------------------------------------------------------- hygiene

def test_no_pyplot_figures_left_behind(tmp_path, rng):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    for i in range(5):
        plots.scatter(tmp_path / plots.scatter_epoch_name(i), _blobs(rng, n=50))
    gc.collect()
    assert len(plt.get_fignums()) == before


@pytest.mark.parametrize("log_scale", [False, True])
def test_manifold_density_map_writes_png_with_points_on_top(tmp_path, rng, log_scale):
    from fmnumpy.manifold import datasets as mdata
    from fmnumpy.manifold.estimator import grid_points
    from fmnumpy.manifold.manifolds import SPHERE
    from fmnumpy.plots import manifold as mplots
    a, b, pts, area = grid_points(SPHERE, 12)
    logp = mdata.log_density("vmf", pts).reshape(len(b), len(a))
    events = mdata.sample("vmf", 50, rng)
    path = mplots.density_map(tmp_path / "d.png", "sphere", (a, b, logp, area),
                              log_scale=log_scale, points=events)
    assert _is_png(path)
