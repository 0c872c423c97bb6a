"""Checkpoints written by fmnumpy 0.1.0 (commit 512da34, tests/fixtures/checkpoints) still
load, and sample the same numbers as they did when they were written."""
import json
import os

import numpy as np
import pytest

import fmnumpy
from reference import FIXTURES  # noqa: E402

HERE = os.path.join(FIXTURES, "checkpoints")
with open(os.path.join(HERE, "samples.json")) as f:
    SAMPLES = json.load(f)

# how each fixture was sampled when it was written (/tmp/mkfix.py at 512da34)
DRAWS = {
    "euclidean": lambda m: m.sample(5, method="rk4", steps=4, seed=3),
    "euclidean_labels": lambda m: m.sample(5, method="euler", steps=4, seed=3, labels=2),
    "sphere": lambda m: m.sample(5, seed=3, steps=4),
    "torus": lambda m: m.sample(5, seed=3, steps=4),
    "discrete": lambda m: m.sample(5, seed=3, steps=4),
    "discrete_uniform": lambda m: m.sample(5, seed=3, steps=4),
}
FAMILY = {"euclidean": fmnumpy.FlowMatcher, "euclidean_labels": fmnumpy.FlowMatcher,
          "sphere": fmnumpy.ManifoldFlowMatcher, "torus": fmnumpy.ManifoldFlowMatcher,
          "discrete": fmnumpy.DiscreteFlowMatcher,
          "discrete_uniform": fmnumpy.DiscreteFlowMatcher}


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_old_checkpoints_load_and_sample_the_same(name):
    model = fmnumpy.load(os.path.join(HERE, name + ".npz"))
    assert type(model) is FAMILY[name]
    x = DRAWS[name](model)
    want = np.asarray(SAMPLES[name])
    if np.issubdtype(x.dtype, np.integer):
        np.testing.assert_array_equal(x, want)
    else:
        np.testing.assert_allclose(x, want, rtol=0, atol=1e-6)
