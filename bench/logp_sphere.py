"""The likelihood on the sphere against sampling: ``log_prob`` of 10,000 points in
float32 and in float64 against ``sample`` of 10,000 points, alternated in three rounds,
on ManifoldFlowMatcher("sphere")'s default network trained 2,000 steps on vmf:

    python bench/logp_sphere.py
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy import ManifoldFlowMatcher  # noqa: E402

fm = ManifoldFlowMatcher("sphere", seed=0).fit("vmf", steps=2000)
x = fm.sample(10000, seed=1)
fm.log_prob(x[:10]); fm.log_prob(x[:10], dtype="float32")
for r in range(3):
    t0 = time.perf_counter(); fm.sample(10000, seed=2); ts = time.perf_counter() - t0
    t0 = time.perf_counter(); l32 = fm.log_prob(x, dtype="float32"); t32 = time.perf_counter() - t0
    t0 = time.perf_counter(); l64 = fm.log_prob(x, dtype="float64"); t64 = time.perf_counter() - t0
    print(f"sample {ts:.2f} s, log_prob float32 {t32:.2f} s ({t32/ts:.2f}x), float64 {t64:.2f} s ({t64/ts:.2f}x); max |l32 - l64| {np.abs(l32-l64).max():.2e}")
