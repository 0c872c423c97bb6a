"""The first thing to run: train a flow on 2spirals and look at it.

    python examples/spirals.py            # about a minute on 2 CPU cores

Writes examples_out/spirals.png (samples against data) and examples_out/flow.gif
(particles flowing from noise at t = 0 to data at t = 1).
"""
import os

import numpy as np

from fmnumpy import FlowMatcher
from fmnumpy.plots import euclidean as plots
from fmnumpy.euclidean.datasets import sample as draw
from fmnumpy.metrics import w2

OUT = "examples_out"

fm = FlowMatcher(seed=0)             # the default model: 4 x 128 SiLU, Fourier features of x
fm.fit("2spirals", steps=20000, batch_size=256, progress=True)

x, traj = fm.sample(2000, method="rk4", steps=100, seed=1, record=50)   # (2000, 2), (51, 2000, 2)
data = draw("2spirals", 2000, np.random.default_rng(2))
print(f"exact W2 between samples and fresh data: {w2(x, data):.4f}")

os.makedirs(OUT, exist_ok=True)
print(plots.scatter(os.path.join(OUT, "spirals.png"), x, data=data, title="fmnumpy on 2spirals"))
print(plots.flow_gif(os.path.join(OUT, "flow.gif"), traj, data=data))
