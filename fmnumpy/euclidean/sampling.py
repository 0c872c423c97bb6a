"""One registry of solvers: each method, its CPU and GPU solvers, and where it
gives log-probabilities.

Dimension letters: N particles, D data dimension, R recorded states.

Every solver here has one signature, ``solve(theta, spec, x0, method, steps,
rtol, atol, record, t0, t1, labels, guidance) -> (x(t1) (N, D), trajectory (R + 1,
N, D) or None, stats or None)`` (t1 < t0 integrates backwards; labels and
guidance condition a conditional network, ``solvers.conditioning``): ``steps`` for the fixed-step tableaus (``solvers.TABLEAUS``), rtol/atol
for the adaptive Dormand-Prince (``adaptive.py``).  Log-probabilities come from
the augmented solve of ``likelihood.py`` (on the GPU ``cuda/likelihood.py``).  A combination the table does not have
raises one line naming what is available; nothing falls back silently.

    method     CPU solver                 GPU solver            log p on
    euler ..   solvers.integrate_mlp      cuda.cuda_sample      cpu, cuda
    dopri5     adaptive.dopri5_mlp        (none)                cpu
    jump       flowmap.jump               cuda.cuda_sample      (none)

``jump`` is not an ODE solver either: ``steps`` jumps of a flow map (``flowmap.py``);
the ODE methods run a flow map on its diagonal u(x, t, t) = v(x, t).

``method="sde"`` is not an ODE solver: ``FlowMatcher.sample`` hands it to
``sde.euler_maruyama`` (the score from the velocity needs the model's path and
source, and the noise a seed), on the CPU.
"""
from collections import namedtuple

from fmnumpy.euclidean.integrate import dopri5_mlp
from fmnumpy.errors import FmnumpyError
from fmnumpy.ode.solvers import METHODS
from fmnumpy.euclidean.integrate import integrate_mlp

DEVICES = ("cpu", "cuda")


def _cpu_fixed(theta, spec, x0, method, steps, rtol, atol, record, t0=0.0, t1=1.0,
               labels=None, guidance=1.0):
    out = integrate_mlp(theta, spec, x0, method, steps, t0=t0, t1=t1, record=record,
                        labels=labels, guidance=guidance)
    return (out + (None,)) if record else (out, None, None)


def _cuda_fixed(theta, spec, x0, method, steps, rtol, atol, record, t0=0.0, t1=1.0,
                labels=None, guidance=1.0):
    from fmnumpy.euclidean.cuda import cuda_sample
    out = cuda_sample(theta, spec, x0, method, steps, t0=t0, t1=t1, record=record,
                      labels=labels, guidance=guidance)
    return (out + (None,)) if record else (out, None, None)


def _cpu_dopri5(theta, spec, x0, method, steps, rtol, atol, record, t0=0.0, t1=1.0,
                labels=None, guidance=1.0):
    x1, stats = dopri5_mlp(theta, spec, x0, rtol, atol, t0=t0, t1=t1, labels=labels,
                           guidance=guidance)
    return x1, None, stats


def _cpu_jump(theta, spec, x0, method, steps, rtol, atol, record, t0=0.0, t1=1.0,
              labels=None, guidance=1.0):
    from fmnumpy.euclidean.flowmap import jump
    out = jump(theta, spec, x0, steps, t0=t0, t1=t1, record=record, labels=labels,
               guidance=guidance)
    return (out + (None,)) if record else (out, None, None)


def _cuda_jump(theta, spec, x0, method, steps, rtol, atol, record, t0=0.0, t1=1.0,
               labels=None, guidance=1.0):
    from fmnumpy.euclidean.cuda import cuda_sample
    from fmnumpy.euclidean.flowmap import check_jumps
    K = check_jumps(spec, steps, t0, t1, labels, guidance)
    out = cuda_sample(theta, spec, x0, "jump", K, t0=t0, t1=t1, record=K if record else 0)
    return (out + (None,)) if record else (out, None, None)


Solver = namedtuple("Solver", "name adaptive sample logprob")
"""``sample``: {device: solve function}; ``logprob``: the devices where
``likelihood.py`` integrates log p with this method."""

SOLVERS = {m: Solver(m, False, {"cpu": _cpu_fixed, "cuda": _cuda_fixed}, ("cpu", "cuda"))
           for m in METHODS}
SOLVERS["dopri5"] = Solver("dopri5", True, {"cpu": _cpu_dopri5}, ("cpu",))
SOLVERS["jump"] = Solver("jump", False, {"cpu": _cpu_jump, "cuda": _cuda_jump}, ())


def _names(ok):
    names = [m for m, s in SOLVERS.items() if ok(s)]
    return ", ".join(names) if names else "none"


def solver(method, device="cpu", logprob=False):
    """The ``Solver`` of ``method``, checked to run on ``device`` (and to give
    log-probabilities there when ``logprob``); else one-line FmnumpyError."""
    key = str(method).lower()
    if key not in SOLVERS:
        raise FmnumpyError(f"unknown method {method!r}; choose one of: " + ", ".join(SOLVERS))
    if device not in DEVICES:
        raise FmnumpyError(f"unknown device {device!r}; choose one of: " + ", ".join(DEVICES))
    s = SOLVERS[key]
    if logprob and device not in s.logprob:
        raise FmnumpyError(
            f"log-probabilities with method {key!r} are not available on {device}; methods "
            f"that give them on {device}: {_names(lambda r: device in r.logprob)}; on cpu: "
            f"{_names(lambda r: 'cpu' in r.logprob)} (use device='cpu')")
    if device not in s.sample:
        raise FmnumpyError(f"method {key!r} has no {device} solver; on {device} choose one of: "
                           f"{_names(lambda r: device in r.sample)} (or use device='cpu')")
    return s
