"""Activation functions and their derivatives, each written once as scalar math.

The plain Python functions below are the single source of each formula; the
CPU code compiles them with ``numba.njit`` (this module) and the CUDA code
compiles the same functions with ``cuda.jit(device=True)`` (``fmnumpy.cuda``).
Derivations: ``docs/gradients.md#activations``.

An activation is selected by an integer code so that compiled loops can take
it as an ordinary argument.
"""
import math

from numba import njit

from .errors import FmnumpyError

SILU, RELU, SELU, TANH = 0, 1, 2, 3
ACTIVATIONS = {"silu": SILU, "relu": RELU, "selu": SELU, "tanh": TANH}

# SELU constants (Klambauer et al. 2017, eq. 2), as in torch.nn.SELU.
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def activation_code(name):
    """Integer code of an activation name; a clear error lists the valid names."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise FmnumpyError(f"unknown activation {name!r}; choose one of: "
                           + ", ".join(sorted(ACTIVATIONS)))
    return ACTIVATIONS[key]


def act(z, kind):
    """sigma(z) for the activation with code ``kind``."""
    if kind == SILU:
        # z * sigmoid(z); for z -> -inf exp(-z) -> inf and the quotient -> 0, no NaN.
        return z / (1.0 + math.exp(-z))
    if kind == RELU:
        return z if z > 0.0 else 0.0 * z
    if kind == SELU:
        return SELU_SCALE * z if z > 0.0 else SELU_SCALE * SELU_ALPHA * (math.exp(z) - 1.0)
    return math.tanh(z)


def dact(z, kind):
    """sigma'(z), the derivative of :func:`act` with respect to its input."""
    if kind == SILU:
        s = 1.0 / (1.0 + math.exp(-z))
        return s * (1.0 + z * (1.0 - s))          # d/dz [z s(z)] = s + z s (1 - s)
    if kind == RELU:
        return 1.0 if z > 0.0 else 0.0            # the subgradient 0 at z = 0, as PyTorch
    if kind == SELU:
        return SELU_SCALE if z > 0.0 else SELU_SCALE * SELU_ALPHA * math.exp(z)
    th = math.tanh(z)
    return 1.0 - th * th


def ddact(z, kind):
    """sigma''(z); used by the forward-mode divergence (docs/likelihood.md)."""
    if kind == SILU:
        s = 1.0 / (1.0 + math.exp(-z))
        ds = s * (1.0 - s)
        return ds * (2.0 + z * (1.0 - 2.0 * s))   # d/dz [s + z s (1 - s)]
    if kind == RELU:
        return 0.0
    if kind == SELU:
        return 0.0 if z > 0.0 else SELU_SCALE * SELU_ALPHA * math.exp(z)
    th = math.tanh(z)
    return -2.0 * th * (1.0 - th * th)


act_cpu = njit(cache=True, inline="always")(act)
dact_cpu = njit(cache=True, inline="always")(dact)
ddact_cpu = njit(cache=True, inline="always")(ddact)
