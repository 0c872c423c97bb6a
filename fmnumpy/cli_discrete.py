"""``fmnumpy train --discrete`` and the discrete checkpoints of ``sample`` and
``evaluate``."""

TRAIN_DEFAULTS = {"dataset": "discrete_checkerboard", "steps": 5000, "batch_size": 1024}
