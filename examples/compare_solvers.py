"""Compare the ODE solvers on a trained model: accuracy against cost.

    python examples/compare_solvers.py [checkpoint.npz]

Without a checkpoint it trains a small model first.  For each fixed-step method
and step count it prints the number of network evaluations (NFE), the distance
to a reference solution (RK4, 400 steps, same noise) and the exact W2 to fresh
data; then the adaptive Dormand-Prince 5(4) solve with its NFE.
"""
import sys

import numpy as np

from fmnumpy import FlowMatcher
from fmnumpy.euclidean.datasets import sample as draw
from fmnumpy.metrics import w2
from fmnumpy.ode.solvers import TABLEAUS

if len(sys.argv) > 1:
    fm = FlowMatcher.load(sys.argv[1])
else:
    fm = FlowMatcher(hidden=(128, 128, 128), seed=0).fit("2spirals", steps=5000,
                                                         progress=True)
data_name = fm.data_ if fm.data_ not in (None, "array") else "2spirals"
x0 = np.random.default_rng(1).standard_normal((2000, fm.spec_.dim))
ref = fm.sample(x0=x0, method="rk4", steps=400)
data = draw(data_name, 2000, np.random.default_rng(2))

print(f"{'method':>9} {'steps':>5} {'NFE':>5} {'error vs reference':>19} {'W2 to data':>11}")
for method, tab in TABLEAUS.items():
    for steps in (1, 2, 4, 8, 16, 32, 64):
        x = fm.sample(x0=x0, method=method, steps=steps)
        err = np.sqrt(((x - ref) ** 2).sum(1).mean())
        print(f"{method:>9} {steps:>5} {steps * tab.stages:>5} {err:>19.2e} {w2(x, data):>11.4f}")
for tol in (1e-3, 1e-5):
    x = fm.sample(x0=x0, method="dopri5", rtol=tol, atol=tol)
    err = np.sqrt(((x - ref) ** 2).sum(1).mean())
    print(f"{'dopri5':>9} {'tol ' + format(tol, '.0e'):>5} {fm.last_solve_.nfe:>5} {err:>19.2e} "
          f"{w2(x, data):>11.4f}")
