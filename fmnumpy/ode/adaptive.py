"""Adaptive step size: the Dormand-Prince 5(4) pair with an error controller.

Dimension letters: B particles, D state dimension, S = 7 stages.

One DOPRI5 step from (x, t) with step h (``docs/adaptive.md``):

    k_i  = f(x + h sum_{j<i} a_ij k_j,  t + c_i h)            i = 1..7
    x5   = x + h sum_i b_i k_i          5th order, the state we keep
    err  = h sum_i (b_i - bhat_i) k_i   x5 minus the embedded 4th-order solution

The 7th stage is evaluated at (x5, t + h) (row 7 of A equals b, "first same as
last"), so an accepted step hands its k_7 to the next step as k_1: six field
evaluations per step.  The step is accepted when

    ||err / (atol + rtol max(|x|, |x5|))|| <= 1

and the next step is h * min(FAC_MAX, max(FAC_MIN, SAFETY ||.||^(-1/5))).

The field is a compiled function ``field(params, x, t, out)`` as in
:func:`fmnumpy.solvers.rk_integrate`; t is a (B,) array holding one time.
"""
import math
from collections import namedtuple
from fractions import Fraction as Fr

import numpy as np
from numba import njit

from fmnumpy.errors import FmnumpyError
from fmnumpy.ode.solvers import Tableau, rk_stage_input

# Controller constants (Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4).
SAFETY = 0.9          # aim a little below the tolerance so the next step is accepted
FAC_MIN = 0.2         # never shrink a step by more than 5x at once
FAC_MAX = 10.0        # never grow it by more than 10x at once
MAX_STEPS = 100000    # attempted steps (accepted + rejected) before giving up

# Error norms over the (B, D) error ratios r = err / (atol + rtol max(|x|, |x5|)).
NORM_RMS, NORM_MAX = 0, 1
NORMS = {"rms": NORM_RMS, "max": NORM_MAX}

# status codes returned by the compiled loop
OK, TOO_MANY_STEPS, STEP_UNDERFLOW = 0, 1, 2

SolveStats = namedtuple("SolveStats", "nfe accepted rejected")
SolveStats.__doc__ = """Work done by a solve: field evaluations (each over the whole
batch), accepted steps and rejected steps."""


class EmbeddedTableau(Tableau):
    """A Butcher tableau with a second, lower-order weight vector ``b_low`` for
    the error estimate; ``e = b - b_low`` (exact and float)."""

    def __init__(self, name, order, order_low, c, A, b, b_low):
        super().__init__(name, order, c, A, b)
        self.order_low = order_low
        self.b_low_exact = tuple(Fr(x) for x in b_low)
        self.e_exact = tuple(p - q for p, q in zip(self.b_exact, self.b_low_exact))
        self.b_low = np.array([float(x) for x in self.b_low_exact])
        self.e = np.array([float(x) for x in self.e_exact])
        S = self.stages
        self.fsal = (self.c_exact[-1] == 1 and self.b_exact[-1] == 0
                     and self.A_exact[-1] == self.b_exact[:S - 1])


# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae",
# J. Comp. Appl. Math. 6, table 2 (RK5(4)7M).
DOPRI5 = EmbeddedTableau(
    "dopri5", 5, 4,
    c=[0, Fr(1, 5), Fr(3, 10), Fr(4, 5), Fr(8, 9), 1, 1],
    A=[[],
       [Fr(1, 5)],
       [Fr(3, 40), Fr(9, 40)],
       [Fr(44, 45), Fr(-56, 15), Fr(32, 9)],
       [Fr(19372, 6561), Fr(-25360, 2187), Fr(64448, 6561), Fr(-212, 729)],
       [Fr(9017, 3168), Fr(-355, 33), Fr(46732, 5247), Fr(49, 176), Fr(-5103, 18656)],
       [Fr(35, 384), 0, Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84)]],
    b=[Fr(35, 384), 0, Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84), 0],
    b_low=[Fr(5179, 57600), 0, Fr(7571, 16695), Fr(393, 640), Fr(-92097, 339200),
           Fr(187, 2100), Fr(1, 40)],
)


def norm_code(norm):
    key = str(norm).lower()
    if key not in NORMS:
        raise FmnumpyError(f"unknown error norm {norm!r}; choose one of: rms, max")
    return NORMS[key]


# ----------------------------------------------------------------------------
# the compiled loop
# ----------------------------------------------------------------------------

@njit(cache=True)
def scaled_norm(y, x, xn, rtol, atol, norm):
    """||y / (atol + rtol max(|x|, |xn|))|| over y, x, xn (B, D).

    NORM_RMS: root mean square over all B*D entries (scipy's and torchdiffeq's
    choice for a flattened state).  NORM_MAX: the largest per-particle RMS over
    D, so every particle meets the tolerance on its own.
    """
    B, D = y.shape
    total = 0.0
    worst = 0.0
    for p in range(B):
        acc = 0.0
        for d in range(D):
            sc = atol + rtol * max(abs(x[p, d]), abs(xn[p, d]))
            r = y[p, d] / sc
            acc += r * r
        total += acc
        worst = max(worst, acc / D)
    if norm == NORM_MAX:
        return np.sqrt(worst)
    return np.sqrt(total / (B * D))


@njit(cache=False, nogil=True)   # takes a compiled function argument: not cacheable
def initial_step(field, params, x, interval, f0, tol, order_low, scratch):
    """|h| for the first step (Hairer, Norsett & Wanner I, sec. II.4, "Starting
    step size"): an Euler step of size h0 = 0.01 ||x||/||f|| probes the second
    derivative f', then h1 = (0.01 / max(||f||, ||f'||))^(1/(q+1)) for the
    error estimate's order q = order_low.  One field evaluation; interval =
    (t0, t1), f0 = f(x, t0) is given, tol = (rtol, atol, norm), scratch = (x1,
    f1 (B, D), ts (B,))."""
    t0, t1 = interval
    rtol, atol, norm = tol
    x1, f1, ts = scratch
    span = abs(t1 - t0)
    direction = 1.0 if t1 > t0 else -1.0
    d0 = scaled_norm(x, x, x, rtol, atol, norm)
    d1 = scaled_norm(f0, x, x, rtol, atol, norm)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    h0 = min(h0, span)
    B, D = x.shape
    for p in range(B):
        for d in range(D):
            x1[p, d] = x[p, d] + direction * h0 * f0[p, d]
    ts[:] = t0 + direction * h0
    field(params, x1, ts, f1)
    for p in range(B):
        for d in range(D):
            f1[p, d] -= f0[p, d]
    d2 = scaled_norm(f1, x, x, rtol, atol, norm) / h0
    dmax = max(d1, d2)
    if dmax <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dmax) ** (1.0 / (order_low + 1))
    return min(100.0 * h0, h1, span)


@njit(cache=False, nogil=True)   # takes a compiled function argument: not cacheable
def adaptive_integrate(field, params, x, interval, control, tab, work):
    """Integrate x (B, D) in place over interval = (t0, t1) (either direction) with
    an embedded FSAL pair tab = (c, A, b, e = b - b_low, order_low; 7 stages for
    DOPRI5): the last row of A must equal b and c[-1] must be 1.

    control = (rtol, atol, h0, max_steps, norm): h0 > 0 fixes |h| of the first
    step, h0 <= 0 chooses it (one extra evaluation).  work = (K (S, B, D) stage
    buffer, xs and xn (B, D), ts (B,)) scratch.  Returns (nfe, accepted,
    rejected, status, t) where status is OK, TOO_MANY_STEPS or STEP_UNDERFLOW
    and t the time reached.
    """
    t0, t1 = interval
    rtol, atol, h0, max_steps, norm = control
    c, A, b, e, order_low = tab
    K, xs, xn, ts = work
    B, D = x.shape
    S = b.shape[0]
    nfe, n_acc, n_rej = 0, 0, 0
    if t1 == t0:
        return nfe, n_acc, n_rej, OK, t0
    direction = 1.0 if t1 > t0 else -1.0
    expo = 1.0 / (order_low + 1)          # err ~ h^(q+1) for the order-q estimate
    t = t0
    ts[:] = t
    field(params, x, ts, K[0])
    nfe += 1
    if h0 > 0.0:
        h = direction * min(h0, abs(t1 - t0))
    else:
        h = direction * initial_step(field, params, x, interval, K[0], (rtol, atol, norm),
                                     order_low, (xs, xn, ts))
        nfe += 1
    last_rejected = False
    while direction * (t1 - t) > 0.0:
        if n_acc + n_rej >= max_steps:
            return nfe, n_acc, n_rej, TOO_MANY_STEPS, t
        # land on t1 exactly; stretch by 1% rather than leave a sliver of a step
        last = direction * (t + 1.01 * h - t1) >= 0.0
        if last:
            h = t1 - t
        # stages 2..S-1; the input of stage S is the 5th-order solution itself
        # (row S of A is b, c_S = 1: FSAL), so its evaluation is f(x_{n+1}, t + h)
        for i in range(1, S - 1):
            rk_stage_input(x, K, A, i, h, xs)
            ts[:] = t + c[i] * h
            field(params, xs, ts, K[i])
        rk_stage_input(x, K, A, S - 1, h, xn)             # xn = x + h sum_i b_i k_i
        ts[:] = t + c[S - 1] * h
        field(params, xn, ts, K[S - 1])
        nfe += S - 1
        # err = h sum_i e_i k_i, written into xs (no longer needed this step)
        for p in range(B):
            for d in range(D):
                acc = 0.0
                for i in range(S):
                    acc += e[i] * K[i, p, d]
                xs[p, d] = h * acc
        err = scaled_norm(xs, x, xn, rtol, atol, norm)
        if err <= 1.0:                                   # accept (NaN fails this test)
            t = t1 if last else t + h
            x[:] = xn
            K[0] = K[S - 1]                              # FSAL
            n_acc += 1
            if err == 0.0:
                fac = FAC_MAX
            else:
                fac = min(FAC_MAX, max(FAC_MIN, SAFETY * err ** (-expo)))
            if last_rejected:                            # do not grow right after a rejection
                fac = min(fac, 1.0)
            last_rejected = False
        else:
            n_rej += 1
            if not math.isfinite(err):                   # NaN or overflow: shrink hard
                fac = FAC_MIN
            else:
                fac = max(FAC_MIN, SAFETY * err ** (-expo))
            last_rejected = True
        h *= fac
        if direction * (t1 - t) > 0.0 and abs(h) <= 1e-14 * max(abs(t), abs(t1), 1.0):
            return nfe, n_acc, n_rej, STEP_UNDERFLOW, t
    return nfe, n_acc, n_rej, OK, t


# ----------------------------------------------------------------------------
# front ends
# ----------------------------------------------------------------------------

def dopri5(field, params, x0, t0=0.0, t1=1.0, rtol=1e-5, atol=1e-5, h0=0.0,
           max_steps=MAX_STEPS, norm="rms"):
    """Solve dx/dt = field(x, t) from x(t0) = x0 (B, D) to t1 with DOPRI5.

    ``field(params, x, t, out)`` is compiled (``numba.njit``).  Returns
    (x(t1), SolveStats); the computation runs in x0's dtype.  Raises
    FmnumpyError if the step size underflows or ``max_steps`` is exceeded.
    """
    x = np.array(x0, copy=True, order="C")
    if x.ndim != 2:
        raise FmnumpyError(f"x0 must have shape (B, D), got {x.shape}")
    if not (rtol > 0.0 or atol > 0.0) or rtol < 0.0 or atol < 0.0:
        raise FmnumpyError(f"tolerances must be >= 0 and not both 0, got rtol={rtol}, "
                           f"atol={atol}")
    B, D = x.shape
    if B == 0 or t0 == t1:
        return x, SolveStats(0, 0, 0)
    tab = DOPRI5
    assert tab.fsal                                    # adaptive_integrate relies on it
    K = np.zeros((tab.stages, B, D), dtype=x.dtype)
    xs = np.zeros_like(x)
    xn = np.zeros_like(x)
    ts = np.zeros(B, dtype=x.dtype)
    nfe, acc, rej, status, t = adaptive_integrate(
        field, params, x, (float(t0), float(t1)),
        (float(rtol), float(atol), float(h0), int(max_steps), norm_code(norm)),
        (tab.c, tab.A, tab.b, tab.e, tab.order_low), (K, xs, xn, ts))
    if status == TOO_MANY_STEPS:
        raise FmnumpyError(f"dopri5 took more than {max_steps} steps and stopped at "
                           f"t={t:.6g}; loosen rtol/atol or raise max_steps")
    if status == STEP_UNDERFLOW:
        raise FmnumpyError(f"dopri5 step size underflowed at t={t:.6g} (the field is "
                           "stiff, singular or not finite there); loosen rtol/atol")
    return x, SolveStats(int(nfe), int(acc), int(rej))


