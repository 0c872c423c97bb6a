"""The one exception type a user sees.

Every check of user input raises :class:`FmnumpyError` with a message that says
what is wrong and what to do; the command line prints that message on one line
and exits with a non-zero code instead of showing a traceback.
"""
import math


class FmnumpyError(ValueError):
    """Bad input or an unusable file: the message is meant for the user."""


def positive_finite(name, value, what=""):
    """``value`` as a float if it is a positive finite number, else FmnumpyError naming
    ``name`` (``what``: a few words on what it is, for the message)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and x > 0.0):
        raise FmnumpyError(f"{name}{what} must be a positive finite number, got {value!r}")
    return x


def positive_int(name, value):
    """``value`` as an int if it is a positive integer, else FmnumpyError naming ``name``."""
    try:
        ok = int(value) == value and int(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FmnumpyError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_ints(name, values):
    """``values``, a sequence of positive integers (or one), as a tuple of ints, else
    FmnumpyError naming ``name``."""
    seq = (values,) if isinstance(values, (int, float, str)) else values
    try:
        out = tuple(positive_int(name, v) for v in seq)
    except (TypeError, FmnumpyError):
        raise FmnumpyError(f"{name} must be positive integers, got {values!r}") from None
    return out
