"""Pictures of simulation-based inference: the pair plot of posterior samples (each
parameter's histogram on the diagonal, each pair's scatter below it), beside reference
samples and the true parameters when given.  Conventions of ``plots/euclidean.py``."""
import numpy as np

from fmnumpy.plots.euclidean import DATA_COLOR, SAMPLE_COLOR, _figure, _save

SCATTER_POINTS = 2000     # points of each set in a pair's panel


def pair_plot(path, samples, reference=None, truth=None, title=None, names=None):
    """samples (N, d) in SAMPLE_COLOR, reference (M, d) in DATA_COLOR, truth (d,) a black
    cross; one panel per pair below the diagonal, histograms on it."""
    samples = np.asarray(samples)
    d = samples.shape[1]
    names = names or [f"theta_{k + 1}" for k in range(d)]
    sets = [(samples, SAMPLE_COLOR, "posterior flow")]
    if reference is not None:
        sets.append((np.asarray(reference), DATA_COLOR, "reference"))
    both = np.concatenate([s for s, _, _ in sets])
    lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    pad = 0.08 * (hi - lo) + 1e-9
    lo, hi = lo - pad, hi + pad
    size = max(4.6, 1.9 * d)
    fig = _figure(size, size)
    axes = fig.subplots(d, d, squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                for s, color, label in sets:
                    ax.hist(s[:, i], bins=50, range=(lo[i], hi[i]), density=True,
                            histtype="step", color=color, label=label)
                if truth is not None:
                    ax.axvline(truth[i], color="k", lw=0.8)
                ax.set_yticks([])
            else:
                for s, color, _ in sets:
                    k = s[:SCATTER_POINTS]
                    ax.scatter(k[:, j], k[:, i], s=1, alpha=0.3, color=color, linewidths=0)
                if truth is not None:
                    ax.plot(truth[j], truth[i], "k+", ms=8)
                ax.set_ylim(lo[i], hi[i])
            ax.set_xlim(lo[j], hi[j])
            if i == d - 1:
                ax.set_xlabel(names[j])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            ax.tick_params(labelsize=6)
    if len(sets) > 1:
        axes[0, 0].legend(fontsize=6, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=8, wrap=True)
    return _save(fig, path)
