"""The activation primitives: the float32 rational tanh of the CPU build against
libm, and every activation's float32 CPU build against its float64 build (which
tests/test_gradients.py checks against finite differences to 1e-12)."""
import math

import numpy as np
import pytest
from numba import njit

from fmnumpy.nn import activations as acts
from fmnumpy.nn.activations import ACTIVATIONS, act_cpu, dact_cpu, ddact_cpu

TANH_F32_ERR = 4e-7          # about 4 float32 ulps of 1 (tools/fit_tanh.py prints 3.2e-7)


@njit(error_model="numpy")
def _tanh_cpu_array(x, out):
    for i in range(x.shape[0]):
        out[i] = acts.tanh_cpu(x[i])


@njit(error_model="numpy")
def _all_array(z, kind, a, d, dd):
    for i in range(z.shape[0]):
        a[i] = act_cpu(z[i], kind)
        d[i] = dact_cpu(z[i], kind)
        dd[i] = ddact_cpu(z[i], kind)


def run(z, kind):
    a, d, dd = np.empty_like(z), np.empty_like(z), np.empty_like(z)
    _all_array(z, kind, a, d, dd)
    return a, d, dd


GRID = np.concatenate([np.linspace(-30, 30, 200001), [0.0, 1e-30, -1e-30, 1e-8, -1e-8]])


def test_float32_tanh_is_rational_and_within_4_ulps():
    x = GRID.astype(np.float32)
    got = np.empty_like(x)
    _tanh_cpu_array(x, got)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - np.tanh(x.astype(np.float64)))
    print(f"max |tanh_cpu - tanh| in float32: {err.max():.3g}")
    assert err.max() <= TANH_F32_ERR
    assert np.all(np.abs(got) <= 1.0)
    np.testing.assert_array_equal(got[x > 0], -_neg(x[x > 0]))          # odd
    # it really is the rational function, not libm
    assert not np.array_equal(got, np.tanh(x))


def _neg(x):
    out = np.empty_like(x)
    _tanh_cpu_array(-x, out)
    return out


def test_float64_tanh_is_libm():
    out = np.empty_like(GRID)
    _tanh_cpu_array(GRID, out)
    np.testing.assert_array_equal(out, np.array([math.tanh(v) for v in GRID]))


def test_rational_fit_script_reproduces_the_coefficients():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parents[2] / "tools" / "fit_tanh.py"
    spec = importlib.util.spec_from_file_location("fit_tanh", path)
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    p, q, err = fit.fit()
    assert err < 2e-8
    stored_p = [getattr(acts, f"TANH_P{k}") for k in range(6)]
    stored_q = [np.float32(1.0)] + [getattr(acts, f"TANH_Q{k}") for k in range(1, 4)]
    np.testing.assert_array_equal(np.float32(p), stored_p)
    np.testing.assert_array_equal(np.float32(q), stored_q)
    assert float(acts.TANH_CLAMP) == pytest.approx(fit.CLAMP, rel=1e-7)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_float32_build_matches_float64_build(name):
    kind = ACTIVATIONS[name]
    z64 = np.linspace(-12, 12, 48001)
    z64 = z64[np.abs(z64) > 1e-3] if name in ("relu", "selu") else z64   # off the kink
    z32 = z64.astype(np.float32)
    for got, ref in zip(run(z32, kind), run(z32.astype(np.float64), kind)):
        assert got.dtype == np.float32
        # float32 rounding of z (|z| <= 12) plus 4 ulps of tanh, scaled by |z| for SiLU
        tol = 4e-7 * (1.0 + np.abs(z64))
        err = np.abs(got.astype(np.float64) - ref)
        assert np.all(err <= tol), f"{name}: max error {err.max():.3g}"


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_float64_build_matches_closed_forms(name):
    kind = ACTIVATIONS[name]
    z = np.linspace(-20, 20, 4001)
    z = z[np.abs(z) > 1e-6]
    a, d, dd = run(z, kind)
    sa, sl = float(acts.SELU_ALPHA), float(acts.SELU_SCALE)
    sig = 1.0 / (1.0 + np.exp(-z))
    ref = {
        "silu": (z * sig, sig * (1 + z * (1 - sig)), sig * (1 - sig) * (2 + z * (1 - 2 * sig))),
        "relu": (np.maximum(z, 0), (z > 0) * 1.0, 0 * z),
        "selu": (sl * np.where(z > 0, z, sa * np.expm1(np.minimum(z, 0))),
                 sl * np.where(z > 0, 1.0, sa * np.exp(np.minimum(z, 0))),
                 sl * np.where(z > 0, 0.0, sa * np.exp(np.minimum(z, 0)))),
        "tanh": (np.tanh(z), 1 - np.tanh(z) ** 2, -2 * np.tanh(z) * (1 - np.tanh(z) ** 2)),
    }[name]
    for got, want in zip((a, d, dd), ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_python_build_is_the_same_formula():
    """The plain-Python functions (compiled for the GPU) agree with the CPU build."""
    for name, kind in ACTIVATIONS.items():
        for z in (-7.5, -1.25, -1e-3, 0.5, 3.0):
            assert acts.act(z, kind) == pytest.approx(float(run(np.array([z]), kind)[0][0]),
                                                     rel=1e-6, abs=1e-7)
            assert acts.dact(z, kind) == pytest.approx(float(run(np.array([z]), kind)[1][0]),
                                                      rel=1e-6, abs=1e-7)
