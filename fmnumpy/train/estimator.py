"""The estimator base every family shares (``FlowMatcher``, ``ManifoldFlowMatcher``,
``DiscreteFlowMatcher``): the parameters, threads, the training run, checkpoints.

Written once here, as scikit-learn's ``BaseEstimator`` does it:

- **Parameters** are read off ``__init__``: every constructor argument is kept as an
  attribute of the same name, so ``get_params`` and ``set_params`` need no list of
  their own.  Fitted attributes end in ``_``.
- **steps** in ``fit`` is the total number of steps, for a fresh run and for
  ``warm_start=True`` alike (a model at step 3,000 asked for ``steps=5000`` takes
  2,000 more); the learning-rate schedule spans it.
- **threads**: ``None`` leaves Numba's and BLAS's thread counts as they are; an integer
  T caps both (SciPy's OpenBLAS included, which compiled ``np.dot`` calls) for the
  duration of each call that computes (:meth:`threads_scope`).
- **The run**: one loop (``train.loop.run``) with one rule for a non-finite loss:
  stop, leave the last good checkpoint on disk, name the step.
- **Checkpoints**: one schema (docs/checkpoints.md) with a ``family`` field,
  written by :meth:`save`; ``fmnumpy.load(path)`` picks the family's class.

A family provides FAMILY, ``_init_state(dim, ...)`` (a fresh ``TrainState`` for data
of dimension dim), ``_checkpoint_extra()``/``_restore_extra(meta, arrays, path)`` for
what else it stores, and its own fit, sample and evaluate.
"""
import contextlib
import functools
import inspect

import numpy as np

from fmnumpy.errors import FmnumpyError, positive_int
from fmnumpy.train.checkpoint import load_checkpoint, save_checkpoint
from fmnumpy.train.loop import run
from fmnumpy.train.optim import adam_config
from fmnumpy.train.progress import bar_factory

FAMILY_NAMES = {"euclidean": "flow matching on R^D (FlowMatcher)",
                "manifold": "flow matching on a manifold (ManifoldFlowMatcher)",
                "discrete": "discrete flow matching (DiscreteFlowMatcher)"}


def checkpoint_family(meta):
    """The family of a checkpoint's metadata: its ``family`` field, or for checkpoints
    of fmnumpy 0.1.0 the ``model`` field ("manifold", "discrete"; none: euclidean)."""
    return meta.get("family") or meta.get("model") or "euclidean"


def check_threads(threads):
    """None, or an integer from 1 to the number of threads Numba may use."""
    if threads is None:
        return None
    import numba
    top = numba.config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
            or not 1 <= threads <= top:
        raise FmnumpyError(f"threads must be an integer from 1 to {top} (the cores Numba "
                           f"can use), got {threads!r}")
    return int(threads)


def within_threads(method):
    """Run an estimator's method within its thread limits (:meth:`Estimator.threads_scope`)."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with self.threads_scope():
            return method(self, *args, **kwargs)
    return wrapped


class Estimator:
    FAMILY = None

    # -- parameters ------------------------------------------------------------------
    @classmethod
    def param_names(cls):
        """The constructor's argument names, in order."""
        return tuple(inspect.signature(cls.__init__).parameters)[1:]

    @classmethod
    def default_params(cls):
        """{name: default} of the constructor: the family's defaults, which its command
        line shows and uses."""
        sig = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in sig.items() if k != "self"}

    def get_params(self, deep=True):
        """The configuration as a dict of constructor arguments (scikit-learn's
        ``get_params``): ``type(m)(**m.get_params())`` is configured like m."""
        out = {}
        for name in self.param_names():
            value = getattr(self, name)
            out[name] = dict(value) if isinstance(value, dict) else value
        return out

    def set_params(self, **params):
        """Change configuration values (scikit-learn's ``set_params``); returns self.
        Unknown names and bad values raise FmnumpyError, leaving self unchanged."""
        unknown = sorted(set(params) - set(self.param_names()))
        if unknown:
            raise FmnumpyError(f"unknown parameter {unknown[0]!r}; {type(self).__name__} "
                               "takes: " + ", ".join(self.param_names()))
        fresh = type(self)(**dict(self.get_params(), **params))      # validates them all
        for name, value in vars(fresh).items():
            if not name.endswith("_"):                               # configuration only
                setattr(self, name, value)
        return self

    def _configure_update(self, lr, optimizer, weight_decay, clip, warmup, schedule, lr_min,
                          ema_decay):
        """The shared update's parameters (``train.update.apply_update``), each kept under
        its name, and their ``AdamConfig`` as ``opt``; a bad value raises first."""
        self.opt = adam_config(optimizer, lr, weight_decay, clip, ema_decay, warmup, schedule,
                               lr_min)
        self.lr, self.optimizer, self.weight_decay, self.clip = lr, optimizer, weight_decay, clip
        self.warmup, self.schedule, self.lr_min, self.ema_decay = warmup, schedule, lr_min, ema_decay

    # -- threads ---------------------------------------------------------------------
    @contextlib.contextmanager
    def threads_scope(self):
        """Within it, at most ``self.threads`` threads: Numba's and BLAS's (both
        restored after).  threads=None changes nothing."""
        if self.threads is None:
            yield
            return
        import numba

        from fmnumpy.threads import limit_blas
        before = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        blas = limit_blas(self.threads)
        try:
            yield
        finally:
            blas.restore_original_limits()
            numba.set_num_threads(before)

    # -- training --------------------------------------------------------------------
    def _check_fitted(self):
        if getattr(self, "state_", None) is None:
            raise FmnumpyError(f"this {type(self).__name__} is not trained yet; call fit() "
                               "or fmnumpy.load()")

    def _continues(self, warm_start, steps, batch_size):
        """Whether ``fit`` continues the fitted state (warm_start on a fitted model),
        checking that it can: the same batch size (the data stream continues exactly)
        and a total of steps not below the steps taken."""
        if not (warm_start and getattr(self, "state_", None) is not None):
            return False
        if self.batch_size_ not in (None, batch_size):
            raise FmnumpyError(f"resume with the same batch size as before "
                               f"({self.batch_size_}), got {batch_size}")
        if steps < self.state_.step:
            raise FmnumpyError(f"the model has already taken {self.state_.step} steps; "
                               f"steps is the total, so ask for more than that (got {steps})")
        return True

    def _run(self, stepper, stream, steps, until=None, progress=False, callback=None,
             callback_every=0, checkpoint=None, checkpoint_every=0, log=None):
        """``train.loop.run`` of ``self.state_`` with ``stepper`` up to ``steps`` in
        total (or ``until``); callback(model, k), which ends the run by returning True.
        The family's ``fit`` runs within the
        thread limits (:func:`within_threads`)."""
        run(self.state_, stream, stepper, steps, until=until, progress=bar_factory(progress),
            callback=None if callback is None else (lambda k: callback(self, k)),
            callback_every=callback_every, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, save=self.save, log=log)
        return self

    # -- checkpoints -----------------------------------------------------------------
    def save(self, path):
        """Write the whole training state to ``path`` (.npz), atomically."""
        self._check_fitted()
        st = self.state_
        extra, arrays = self._checkpoint_extra()
        meta = {"family": self.FAMILY, "params": self.get_params(), "dim": self.dim_,
                "step": st.step, "seconds": st.seconds, "total_steps": self.total_steps_,
                "batch_size": self.batch_size_, "data": self.data_, "extra": extra,
                "rng": {"generator": "PCG64", "seed": self.seed, "counter": st.step}}
        return save_checkpoint(path, meta, dict(st.arrays(), **arrays))

    @classmethod
    def load(cls, path):
        """The model of a checkpoint of this family, ready to sample or to continue
        with ``fit(..., warm_start=True)`` (``fmnumpy.load`` reads any family)."""
        meta, arrays = load_checkpoint(path)
        family = checkpoint_family(meta)
        if family != cls.FAMILY:
            raise FmnumpyError(f"{path} holds a model of {FAMILY_NAMES.get(family, family)}, "
                               f"not {FAMILY_NAMES[cls.FAMILY]}; load it with "
                               "fmnumpy.load(path)")
        return cls.from_checkpoint(meta, arrays, path)

    @classmethod
    def from_checkpoint(cls, meta, arrays, path):
        """The model of a checkpoint's (meta, arrays) of this family."""
        try:
            params = cls._params_of(meta)
            fm = cls(**params)
            fm._restore_extra(meta, arrays, path)          # _init_state included
            fm.state_.restore(arrays, meta["step"], meta.get("seconds", 0.0), path)
            fm.total_steps_ = meta.get("total_steps")
            fm.batch_size_ = meta.get("batch_size")
            fm.data_ = meta.get("data")
        except (KeyError, TypeError) as e:
            raise FmnumpyError(f"{path}: checkpoint metadata is incomplete ({e}); retrain "
                               "or pass another file") from None
        return fm

    @classmethod
    def _params_of(cls, meta):
        """The constructor's arguments stored in a checkpoint (lists back to tuples)."""
        p = {k: v for k, v in meta["params"].items() if k in cls.param_names()}
        if "hidden" in p:
            p["hidden"] = tuple(p["hidden"])
        return p

    def _checkpoint_extra(self):
        """(extra metadata, extra arrays) a family stores beside the state."""
        return {}, {}

    def _restore_extra(self, meta, arrays, path):
        """Set up the state for a checkpoint's (meta, arrays): by default
        ``_init_state(meta["dim"])``."""
        self._init_state(int(meta["dim"]))


def positive_steps(steps, batch_size):
    """(steps, batch_size) checked: positive integers."""
    return positive_int("steps", steps), positive_int("batch size", batch_size)
