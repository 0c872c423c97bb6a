"""The elementwise activation pass alone: fmnumpy's vectorised float32 activations
against the same formulas written with the C library's exp (a scalar call per element).

    NUMBA_NUM_THREADS=1 python bench/act_pass.py [B]

For a (B, 256) float32 block (default B = 4096), times z -> (sigma(z), sigma'(z)) for
SiLU and SELU, alternating the two versions over 7 rounds in one process, and prints the
median ns per element and the ratio.  This is mlp.bias_activation, the pass that follows each hidden
layer's matrix product in training and in sampling.
"""
import math
import os
import sys
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fmnumpy.nn.activations import SELU, SELU_ALPHA, SELU_SCALE, SILU  # noqa: E402
from fmnumpy.nn.mlp import bias_activation  # noqa: E402


@njit(cache=True)
def libm_pass(a, b, kind, s):
    """The formulas of docs/gradients.md#activations with math.exp (not vectorised)."""
    B, H = a.shape
    for i in range(B):
        for j in range(H):
            z = a[i, j] + b[j]
            if kind == SILU:
                e = np.float32(1.0) / (np.float32(1.0) + math.exp(-z))
                a[i, j] = z * e
                s[i, j] = e * (np.float32(1.0) + z * (np.float32(1.0) - e))
            elif z > 0:
                a[i, j] = SELU_SCALE * z
                s[i, j] = SELU_SCALE
            else:
                e = math.exp(z)
                a[i, j] = SELU_SCALE * SELU_ALPHA * (e - np.float32(1.0))
                s[i, j] = SELU_SCALE * SELU_ALPHA * e


def main():
    B, H = (int(sys.argv[1]) if len(sys.argv) > 1 else 4096), 256
    rng = np.random.default_rng(0)
    z0 = (rng.standard_normal((B, H)) * 2).astype(np.float32)
    b = np.zeros(H, np.float32)
    a, s = np.empty_like(z0), np.empty_like(z0)
    a2, s2 = np.empty_like(z0), np.empty_like(z0)
    n = max(1, 2 ** 22 // (B * H))
    for kind, name in ((SILU, "silu"), (SELU, "selu")):
        a[:] = z0
        bias_activation(a, b, kind, s)
        a2[:] = z0
        libm_pass(a2, b, kind, s2)
        err = max(np.abs(a - a2).max(), np.abs(s - s2).max())
        ours, ref = [], []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(n):
                a2[:] = z0
                libm_pass(a2, b, kind, s2)
            ref.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(n):
                a2[:] = z0
                bias_activation(a2, b, kind, s)
            ours.append(time.perf_counter() - t)
        per = 1e9 / (n * B * H)
        o, r = np.median(ours) * per, np.median(ref) * per
        print(f"{name} B={B} H={H}: fmnumpy {o:.2f} ns/element, libm exp {r:.2f} ns/element "
              f"(both include a copy), ratio {r / o:.1f}x; max |difference| {err:.2g}")


if __name__ == "__main__":
    main()
