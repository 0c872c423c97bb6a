"""Flow matching on R^D: paths, the fused step, batches, sampling and likelihood,
datasets, reflow, and the CUDA twins in ``cuda/`` (docs/flow_matching.md)."""
