"""What exact minibatch OT adds to a training step (issue: OT cheaper than the step).

    NUMBA_NUM_THREADS=1 python bench/ot_cost.py [A|B]

Alternates, 5 rounds: 320 training steps of the model with independent pairs (data
drawing included), then the exact OT pairing (cost matrix + Jonker-Volgenant) of 640
batches of 256 (noise against 2spirals); prints the medians per step / per batch.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy import FlowMatcher  # noqa: E402
from fmnumpy.couplings import exact_ot_chunk  # noqa: E402
from fmnumpy.datasets import sample  # noqa: E402

MODELS = {"A": ((64, 64, 64), "selu"), "B": ((256, 256, 256), "silu")}
name = sys.argv[1] if len(sys.argv) > 1 else "A"
hidden, act = MODELS[name]
fm = FlowMatcher(hidden=hidden, activation=act, seed=0)
fm.fit("2spirals", steps=64, batch_size=256)                      # compile
rng = np.random.default_rng(0)
x1 = sample("2spirals", 64 * 256, rng).reshape(64, 256, 2)
x0 = rng.standard_normal((64, 256, 2)).astype(np.float32)
exact_ot_chunk(x0.copy(), x1.copy(), rng)                          # compile
step_t, ot_t = [], []
for r in range(5):
    t = time.perf_counter()
    fm.fit("2spirals", steps=fm.step_ + 320, batch_size=256, warm_start=True)
    step_t.append((time.perf_counter() - t) / 320)
    t = time.perf_counter()
    for k in range(10):
        exact_ot_chunk(x0.copy(), x1.copy(), rng)
    ot_t.append((time.perf_counter() - t) / 640)
print(f"model {name}: training step {np.median(step_t) * 1e3:.3f} ms; exact OT pairing "
      f"of one batch of 256: {np.median(ot_t) * 1e3:.3f} ms")
