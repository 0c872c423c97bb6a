"""Training, shared by every family: the optimizer and the one update, the state buffer,
training times, the one loop, checkpoints and the estimator base (docs/architecture.md)."""
