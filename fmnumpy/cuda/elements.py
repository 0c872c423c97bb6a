"""Per-element formulas of the training step that the CPU writes as array loops:
here as scalar functions, compiled for the GPU by ``device.py`` and checked
against the CPU array functions in ``tests/test_cuda.py``.

Plain Python and ``math`` only (no numba import): importing this never needs a GPU.
"""
import math


def path_element(x0, x1, t, sigma_min):
    """(xt, ut) of one coordinate on the straight path (``paths.straight_path``,
    Lipman et al. 2023 eq. 20-23): xt = (1 - (1 - sigma_min) t) x0 + t x1,
    ut = x1 - (1 - sigma_min) x0."""
    s = 1.0 - sigma_min
    return (1.0 - s * t) * x0 + t * x1, x1 - s * x0


def cfm_element(v, ut, c):
    """One coordinate of the loss (``loss.py``): returns ((v - ut)^2, dL/dv) with
    c = 2 / (B D), so that L = sum (v - ut)^2 / (B D) and dL/dv = c (v - ut)."""
    r = v - ut
    return r * r, c * r


def time_feature(t, k):
    """(sin(pi 2^k t), cos(pi 2^k t)): frequency k of ``mlp.time_features``."""
    w = math.pi * 2.0 ** k
    return math.sin(w * t), math.cos(w * t)


def spiral_point(u_s, u_x, u_y, u_arm, n_x, n_y):
    """One ``2spirals`` point (WORKLOADS.md, ``datasets.two_spirals``) from four
    uniforms on [0, 1) and two standard normals: s = 3 pi sqrt(u_s) (540 degrees),
    arm point (-s cos s + u_x / 2, s sin s + u_y / 2), negated when u_arm >= 1/2,
    divided by 3, plus N(0, 0.1^2) noise."""
    s = math.sqrt(u_s) * 540.0 * 2.0 * math.pi / 360.0
    sign = 1.0 if u_arm < 0.5 else -1.0
    x = sign * (-math.cos(s) * s + u_x * 0.5) / 3.0 + 0.1 * n_x
    y = sign * (math.sin(s) * s + u_y * 0.5) / 3.0 + 0.1 * n_y
    return x, y
