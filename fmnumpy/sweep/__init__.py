"""Sweeps: a grid of ``fmnumpy train`` runs (datasets x seeds x options) on Dask
distributed, from one machine to a cluster, each run in a folder of its own, resumable,
and their summary (docs/sweeps.md).

    spec.load_spec(path)              the TOML spec, checked against train's options
    execute.run_sweep(spec, out, ...) every unfinished run, one Dask task each
    summary.summarize(out)            summary.csv, summary.md, summary.png
"""
