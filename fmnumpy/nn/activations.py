"""Activation functions and their derivatives, each written once as scalar math.

The formulas below are the single source of each activation.  They are built
by :func:`activation_functions` around a ``tanh`` primitive (the logistic
sigmoid is 1/2 + tanh(z/2)/2 and exp(z) - 1 = 2 tanh(z/2) / (1 - tanh(z/2)), so
tanh is the only transcendental function any of them needs):

- the GPU build (``fmnumpy.cuda``) compiles them around ``math.tanh``, the
  device's own tanhf;
- the CPU build (``act_cpu`` ...) compiles them around :func:`tanh_cpu`, which
  is the C library's tanh in float64 and, in float32, :func:`tanh_rational`:
  a rational function accurate to about 3e-7 (4 float32 ulps) made only of
  multiply-adds and one division, which the compiler vectorises (a libm call
  does not; ``bench/act_pass.py`` times the pass against libm's exp).

The float64 build is exact to libm accuracy, so the float64 finite-difference
oracle of the tests checks every derivative to 1e-12; the float32 build is
checked against it.  All constants are float32 so float32 inputs stay float32
(a float64 constant would promote the arithmetic, and the tanh, to float64);
products of two constants are bracketed so that they are never rounded to
float32 on the way when the input is float64.
Derivations: ``docs/gradients.md#activations``.

An activation is selected by an integer code so that compiled loops can take
it as an ordinary argument.
"""
import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from fmnumpy.errors import FmnumpyError

SILU, RELU, SELU, TANH = 0, 1, 2, 3
ACTIVATIONS = {"silu": SILU, "relu": RELU, "selu": SELU, "tanh": TANH}

_f32 = np.float32
ZERO, HALF, ONE, TWO = _f32(0.0), _f32(0.5), _f32(1.0), _f32(2.0)
# SELU constants (Klambauer et al. 2017, eq. 2), rounded to float32 as torch.nn.SELU
# applies them to float32 tensors.
SELU_ALPHA = _f32(1.6732632423543772)
SELU_SCALE = _f32(1.0507009873554805)

# tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= TANH_CLAMP, +/-(its value there) beyond.
# Coefficients from ``python tools/fit_tanh.py`` (minimax relative error 1.7e-8 in
# float64; 3.2e-7 absolute once rounded to and evaluated in float32).  Q has
# positive coefficients, so Q >= 1 and the division is always safe.
TANH_CLAMP = _f32(7.90531110763549805)
TANH_P0, TANH_P1, TANH_P2 = _f32(0.9999999832788525), _f32(0.1298463618378251), _f32(0.002991795554287726)
TANH_P3, TANH_P4, TANH_P5 = _f32(9.936215020548116e-06), _f32(-1.489610127821691e-08), _f32(2.407451982263276e-11)
TANH_Q1, TANH_Q2, TANH_Q3 = _f32(0.4631795408220028), _f32(0.024051880857945577), _f32(0.00023804383163341248)


def activation_code(name):
    """Integer code of an activation name; a clear error lists the valid names."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise FmnumpyError(f"unknown activation {name!r}; choose one of: "
                           + ", ".join(sorted(ACTIVATIONS)))
    return ACTIVATIONS[key]


def tanh_rational(x):
    """float32 tanh(x) = x P(x^2) / Q(x^2) (Horner), x clamped to +/-TANH_CLAMP."""
    x = min(max(x, -TANH_CLAMP), TANH_CLAMP)
    u = x * x
    p = ((((TANH_P5 * u + TANH_P4) * u + TANH_P3) * u + TANH_P2) * u + TANH_P1) * u + TANH_P0
    q = ((TANH_Q3 * u + TANH_Q2) * u + TANH_Q1) * u + ONE
    return x * p / q


_tanh_rational_cpu = njit(inline="always", error_model="numpy")(tanh_rational)


def tanh_cpu(x):
    """The CPU build's tanh: :func:`tanh_rational` for float32, libm otherwise."""
    return math.tanh(x)


@overload(tanh_cpu, inline="always")
def _tanh_cpu_typed(x):
    if x == types.float32:
        return lambda x: _tanh_rational_cpu(x)
    return lambda x: math.tanh(x)


def activation_functions(tanh):
    """(act, dact, ddact) built around the primitive ``tanh``; see the module doc."""

    def act(z, kind):
        """sigma(z) for the activation with code ``kind``."""
        if kind == SILU:
            return z * (HALF + HALF * tanh(HALF * z))     # z * sigmoid(z)
        if kind == RELU:
            return z if z > ZERO else ZERO * z
        if kind == SELU:
            if z > ZERO:
                return SELU_SCALE * z
            th = tanh(HALF * z)
            return SELU_SCALE * (SELU_ALPHA * (TWO * th / (ONE - th)))   # alpha (e^z - 1)
        return tanh(z)

    def dact(z, kind):
        """sigma'(z), the derivative of act with respect to its input."""
        if kind == SILU:
            s = HALF + HALF * tanh(HALF * z)
            return s * (ONE + z * (ONE - s))          # d/dz [z s(z)] = s + z s (1 - s)
        if kind == RELU:
            return ONE if z > ZERO else ZERO          # the subgradient 0 at z = 0, as PyTorch
        if kind == SELU:
            if z > ZERO:
                return SELU_SCALE
            th = tanh(HALF * z)
            return SELU_SCALE * (SELU_ALPHA * ((ONE + th) / (ONE - th)))  # alpha e^z
        th = tanh(z)
        return ONE - th * th

    def ddact(z, kind):
        """sigma''(z); used by the forward-mode divergence (docs/likelihood.md)."""
        if kind == SILU:
            s = HALF + HALF * tanh(HALF * z)
            ds = s * (ONE - s)
            return ds * (TWO + z * (ONE - TWO * s))   # d/dz [s + z s (1 - s)]
        if kind == RELU:
            return ZERO
        if kind == SELU:
            if z > ZERO:
                return ZERO
            th = tanh(HALF * z)
            return SELU_SCALE * (SELU_ALPHA * ((ONE + th) / (ONE - th)))
        th = tanh(z)
        return -TWO * th * (ONE - th * th)

    return act, dact, ddact


# Plain Python and GPU build: the device's tanh.
act, dact, ddact = activation_functions(math.tanh)

# CPU build.  error_model="numpy": a division never raises (Q >= 1 and 1 - tanh >= 1
# here), and without the zero check the loops vectorise.
_cpu = activation_functions(tanh_cpu)
act_cpu, dact_cpu, ddact_cpu = (njit(cache=True, inline="always", error_model="numpy")(f)
                                for f in _cpu)
