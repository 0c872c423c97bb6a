"""Independent against quasi-random source points, on rings.

    python examples/quasi_random.py       # about half a minute on 2 CPU cores

Trains the default model on rings, draws 2,000 samples twice from the same model:
from independent N(0, I) points (``sample``) and from scrambled Sobol points
(``sample(qmc=True)``), and writes examples_out/rings_iid.png and
examples_out/rings_qmc.png (samples against 2,000 fresh data points) with the exact
W2 of each to those points and the data floor (docs/metrics.md#quasi-random-source-points).
"""
import os

import numpy as np

from fmnumpy import FlowMatcher
from fmnumpy.plots import euclidean as plots
from fmnumpy.euclidean.datasets import sample as draw
from fmnumpy.metrics import w2

OUT = "examples_out"

fm = FlowMatcher(seed=0).fit("rings", progress=True)
data = draw("rings", 2000, np.random.default_rng(2))
floor = np.mean([w2(draw("rings", 2000, np.random.default_rng([3, p])), data) for p in range(5)])
print(f"data floor (W2 of 5 fresh draws to the same data): {floor:.4f}")
os.makedirs(OUT, exist_ok=True)
for name, qmc in (("iid", False), ("qmc", True)):
    x = fm.sample(2000, seed=1, qmc=qmc)
    d = w2(x, data)
    print(f"{name}: W2 {d:.4f} ({d / floor:.2f}x the floor)")
    print(plots.scatter(os.path.join(OUT, f"rings_{name}.png"), x, data=data,
                        title=f"rings, {'quasi-random' if qmc else 'independent'} source "
                        f"points: W2 {d:.3f}"))
