"""The training state: everything a training step changes, in one place.

Dimension letters: P parameters.

``TrainState.buf`` (5, P) float32 holds the rows THETA (parameters), GRAD (the
last step's gradient), M and V (Adam's moments) and EMA (the moving average of
the parameters that sampling uses), each in the flat layout of ``mlp.py``.  The
GPU keeps the same (5, P) array on the device, so moving the state between the
two is one copy.  Beside it: the steps taken, the loss of every step and the
training time.

The estimator (``api.FlowMatcher``) owns one; the loop (``train.run``) and the
steppers (``step.CpuStepper``, ``cuda.stepper.CudaStepper``) receive it, and
nothing else.
"""
import numpy as np

from fmnumpy.config import DTYPE
from fmnumpy.errors import FmnumpyError

THETA, GRAD, M, V, EMA = range(5)
ROWS = ("theta", "dtheta", "m", "v", "ema")      # names of the rows, in order


class TrainState:
    """buf (5, P) rows theta, dtheta, m, v, ema; ``step`` steps taken (0-based
    count, so the next Adam step is step + 1); ``losses`` one float per step;
    ``seconds`` spent in training loops."""

    def __init__(self, theta, dtype=DTYPE):
        theta = np.asarray(theta)
        self.buf = np.zeros((5, theta.shape[0]), dtype=dtype)      # (5, P)
        self.buf[THETA] = theta
        self.buf[EMA] = theta
        self.step = 0
        self.losses = []
        self.seconds = 0.0

    @property
    def n_params(self):
        return self.buf.shape[1]

    theta = property(lambda self: self.buf[THETA], doc="parameters (P,), a view")
    dtheta = property(lambda self: self.buf[GRAD], doc="last gradient (P,), a view")
    m = property(lambda self: self.buf[M], doc="Adam's first moment (P,), a view")
    v = property(lambda self: self.buf[V], doc="Adam's second moment (P,), a view")
    ema = property(lambda self: self.buf[EMA], doc="EMA of the parameters (P,), a view")

    def record(self, losses):
        """Count len(losses) more steps taken, with these losses."""
        self.losses.extend(float(x) for x in losses)
        self.step += len(losses)

    def arrays(self):
        """The arrays a checkpoint stores: theta, m, v, ema (P,) and the losses."""
        return {"theta": self.theta, "m": self.m, "v": self.v, "ema": self.ema,
                "losses": np.asarray(self.losses, np.float64)}

    def restore(self, arrays, step, seconds, path):
        """Copy a checkpoint's ``arrays`` (as :meth:`arrays`) into this state of the
        same size, with its step count and seconds; ``path`` names it in errors."""
        if arrays["theta"].shape != self.theta.shape:
            raise FmnumpyError(f"{path}: {arrays['theta'].shape[0]} parameters, the "
                               f"configuration needs {self.theta.shape[0]}")
        for name in ("theta", "m", "v", "ema"):
            getattr(self, name)[:] = arrays[name]
        self.step, self.seconds = int(step), float(seconds)
        self.losses = [float(x) for x in arrays["losses"]]
