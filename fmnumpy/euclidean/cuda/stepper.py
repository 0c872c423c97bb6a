"""The GPU twin of ``step.CpuStepper``: ``CudaTrainer`` keeps the training state
on the GPU and launches the kernels of each step (``cuda/step.py``);
``CudaStepper`` drives it for ``train.run``.

Dimension letters: B batch, D data dimension, P parameters, C steps per chunk.

A step is four kernel launches (``step.py``) and nothing else: the
host neither waits nor copies.  Per chunk of C = ``config.DATA_CHUNK_STEPS``
steps the host uploads the step schedule (learning rate, bias corrections, EMA
decay: the CPU's formulas, evaluated on the host) and, for data the device
cannot draw, the chunk's x1; after the chunk it reads back the C losses.

Random draws: x0 and t (and 2spirals' x1) come from one xoroshiro128+ state
per batch row, seeded from (seed, first step); x1 of other data is the host's
``train.BatchStream.x1_chunk``, the x1 the CPU trains on.
"""
import numpy as np

from fmnumpy import config
from fmnumpy.errors import FmnumpyError
from fmnumpy.train.optim import ema_decay_at, learning_rate
from fmnumpy.euclidean.cuda.device import (cuda_module, fastmath, grid_stride_blocks, launch,
    threads_per_block)
from fmnumpy.euclidean.cuda.layout import layer_table
from fmnumpy.euclidean.cuda.tiles import TILES, mlp_config, register_cap, stage_regs, wg_config
from fmnumpy.euclidean.paths import NOISY, STRAIGHT
from fmnumpy.euclidean.cuda.step import (DATA_2SPIRALS, DATA_ARRAYS, DATA_STREAM, EMA, GRAD,
    M, THETA, V, make_adam_ema, make_forward_backward, make_reduce_grad, make_weight_grad)

DEVICE_RNG_STREAM = 2
DATA_HOST = -1       # whole batches from the host's stream, run as DATA_ARRAYS


class CudaTrainer:
    """Flow-matching training of the MLP ``spec`` with optimizer settings ``opt``
    (optim.AdamConfig) on batches of ``batch`` rows.

    Where :meth:`run` takes x1 from: ``spirals=True``: 2spirals drawn on the
    device (D = 2); else ``stream`` (a ``train.BatchStream``): its x1, uploaded per
    chunk, x0 and t drawn on the device; with ``host_batches=True`` the stream's
    whole batches (x0, x1, t: any source, any coupling, the host's draws), uploaded
    per chunk; neither: batches are given to :meth:`run_arrays` only.
    """

    def __init__(self, spec, opt, batch, path=(STRAIGHT, 0.0), stream=None, spirals=False,
                 seed=0, start_step=0, time_power=1.0, host_batches=False, noise=None):
        cu = cuda_module()
        self.spec, self.opt = spec, opt
        self.B = int(batch)
        if self.B < 1:
            raise FmnumpyError(f"batch size must be a positive integer, got {batch}")
        self.D = spec.dim
        # the path (code, parameter) of ``FlowMatcher.path_args``.  The parameter
        # rides in the kernel's sigma_min argument; the eps of the noisy paths (SB,
        # GAUSS) comes from the host's ``noise`` (train.PathNoise) with the host's
        # batches
        self.path, self.sigma_min = int(path[0]), float(path[1])
        self.noisy = self.path in NOISY
        self.noise = noise
        if self.noisy and not (host_batches and noise is not None):
            raise FmnumpyError("the sb and constant-sigma paths train on the host's batches "
                               "and noise (host_batches=True, noise=PathNoise)")
        # a conditional network: each row's class in the last column of the host's batches
        self.labels = spec.n_classes > 0
        if self.labels and stream is not None and not host_batches:
            raise FmnumpyError("a conditional model trains on the host's batches and labels "
                               "(host_batches=True)")
        self.n_in = 2 * self.D + 1 + (self.D if self.noisy else 0) + int(self.labels)
        self.time_power = float(time_power)      # t of device-drawn batches (paths.time_from_uniform)
        self.seed = int(seed)
        self.C = int(config.DATA_CHUNK_STEPS)
        sizes = spec.sizes
        P = spec.n_params
        fm = fastmath()
        self._layouts = self.layouts(spec, self.B)
        self.fallbacks = []
        self.wg = wg_config()
        self.NT = threads_per_block()
        lay, n_work, n_tiles = layer_table(sizes, self.B, self.wg)
        self.n_tiles = n_tiles
        # batch splits of the weight gradient: about wg_target_blocks blocks in all
        splits = max(1, -(-int(TILES["wg_target_blocks"]) // n_tiles))
        rows = -(-self.B // splits)
        self.rows_per_split = -(-rows // self.wg.BK) * self.wg.BK
        self.S = -(-self.B // self.rows_per_split)

        self._use(self._layouts.pop(0))
        self.k_wg = make_weight_grad(self.wg, fm)
        self.k_red = make_reduce_grad(self.NT, fm)
        self.k_adam = make_adam_ema(fm)

        self.lay = cu.to_device(lay)
        self.work = cu.device_array(n_work, dtype=np.float32)
        self.state = cu.to_device(np.zeros((5, P), dtype=np.float32))
        self.part = cu.device_array((self.S, P), dtype=np.float32)
        self.stats = cu.to_device(np.zeros((self.C, 2)))
        self.sched = cu.to_device(np.zeros((self.C, 4)))
        self.bad = cu.to_device(np.zeros(1, dtype=np.int64))
        self.P = P

        self.mode = None
        self.stream = stream
        self.xin = cu.to_device(np.zeros((1, 1, 2 * self.D + 1), dtype=np.float32))
        self.chunk_id = None
        self.mode_now = DATA_ARRAYS
        self.launched = (0, 0)
        if spirals:
            if self.D != 2:
                raise FmnumpyError(f"2spirals is 2-D; the model has D = {self.D}")
            self.mode = DATA_2SPIRALS
        elif stream is not None:
            self.mode = DATA_HOST if host_batches else DATA_STREAM
        from numba.cuda.random import create_xoroshiro128p_states
        rseed = int(np.random.SeedSequence([self.seed, DEVICE_RNG_STREAM, int(start_step)])
                    .generate_state(1, np.uint32)[0])
        self.rng = create_xoroshiro128p_states(self.B, seed=rseed)

    @staticmethod
    def layouts(spec, B):
        """Block layouts of forward_backward for batches of B rows, best first
        (dynamic shared memory where TILES allow it; see _forward_backward)."""
        width, threads = int(max(spec.sizes)), threads_per_block()
        out = []
        for d in (int(TILES["mlp_dynamic_shared"]), 0):
            try:
                cfg = mlp_config(width, threads, rows=B, dynamic=d)
            except FmnumpyError:
                if d or out:
                    continue
                raise
            if cfg not in out:
                out.append(cfg)
        return out

    # -- state ----------------------------------------------------------------------
    def set_state(self, theta, m, v, ema):
        """Upload the flat (P,) buffers theta, m, v, ema (the gradient row starts at 0)."""
        host = np.zeros((5, self.P), dtype=np.float32)
        host[THETA], host[M], host[V], host[EMA] = theta, m, v, ema
        self.upload(host)

    def upload(self, buf):
        """Upload a whole (5, P) ``state.TrainState.buf``."""
        self.state.copy_to_device(np.ascontiguousarray(buf, dtype=np.float32))
        self.bad.copy_to_device(np.zeros(1, dtype=np.int64))

    def download(self, buf):
        """Copy the device state into the host's (5, P) ``buf``."""
        buf[...] = self.state.copy_to_host()

    def get_state(self):
        """dict of host copies: theta, dtheta, m, v, ema (P,) float32."""
        host = self.state.copy_to_host()
        return dict(theta=host[THETA].copy(), dtheta=host[GRAD].copy(), m=host[M].copy(),
                    v=host[V].copy(), ema=host[EMA].copy())

    # -- launches -------------------------------------------------------------------
    def launchers(self, c, k):
        """The four launches of 1-based step k at chunk position c, as zero-argument
        callables in order (forward_backward, weight_grad, reduce_grad, adam_ema)."""
        spec, opt = self.spec, self.opt
        b1, b2 = opt.betas
        g = grid_stride_blocks(self.P, self.NT)
        return (
            lambda: self._forward_backward(
                self.state, self.lay, self.work, self.rng, self.xin, self.stats, c, self.B,
                spec.n_freq, self.sigma_min, self.time_power, self.mode_now),
            lambda: self.k_wg[(self.n_tiles, self.S), self.wg.NT](
                self.lay, self.work, self.part, self.B, self.rows_per_split),
            lambda: self.k_red[g, self.NT](self.part, self.state, self.stats, c),
            lambda: self.k_adam[g, self.NT](
                self.state, self.stats, self.sched, c, k, self.bad, b1, b2, opt.eps,
                opt.weight_decay, 1 if opt.decoupled else 0, opt.clip))

    def _use(self, cfg):
        self.cfg = cfg
        self.k_fb = make_forward_backward(cfg, self.D, fastmath("forward_backward"),
                                          register_cap(cfg.NT), stage_regs("fb"),
                                          int(self.spec.kind), self.path, self.spec.x_freqs,
                                          int(TILES["fb_kpass"]), self.labels, self.spec.x_dirs)
        self._fb_ready = False

    def _forward_backward(self, *args):
        """Launch forward_backward; on its first launch, a layout that does not
        build or launch here (dynamic shared memory refused) falls back to the next."""
        while True:
            cfg = self.cfg
            try:
                launch(self.k_fb, -(-self.B // cfg.PB), cfg.NT, cfg.DYN, args, not self._fb_ready)
                self._fb_ready = True
                return
            except Exception as e:
                if self._fb_ready or not self._layouts:
                    raise
                self.fallbacks.append((cfg, repr(e)[:200]))
                self._use(self._layouts.pop(0))

    def _gradient(self, c):
        """Launches of loss and dtheta for chunk position c (stats[c] must be zero)."""
        for go in self.launchers(c, 0)[:3]:
            go()

    def _step(self, c, k):
        """All launches of 1-based step k at chunk position c."""
        for go in self.launchers(c, k):
            go()

    def _schedule(self, k_first, n, total):
        opt = self.opt
        b1, b2 = opt.betas
        sched = np.zeros((self.C, 4))
        for c in range(n):
            k = k_first + c
            sched[c] = (learning_rate(k, opt.lr, total, opt.warmup, opt.schedule, opt.lr_min),
                        1.0 - b1 ** k, 1.0 - b2 ** k, ema_decay_at(k, opt.ema_decay))
        return sched

    def _begin(self, pos, n, k_first, total):
        """Upload the schedule of steps k_first.. and zero the statistics."""
        sched = np.zeros((self.C, 4))
        sched[pos:pos + n] = self._schedule(k_first, n, total)[:n]
        self.sched.copy_to_device(sched)
        self.stats.copy_to_device(np.zeros((self.C, 2)))

    def _finish(self, pos, n):
        """Wait for the chunk; (losses (n,), first bad 1-based step or 0)."""
        stats = self.stats.copy_to_host()
        bad = int(self.bad.copy_to_host()[0])
        return stats[pos:pos + n, 0].copy(), bad

    def run(self, step, n, total):
        """Take steps step+1 .. step+n (0-based ``step`` = steps already taken) of a
        run of ``total`` steps, on data drawn as set up by ``data``; n must not
        cross a chunk boundary (see :meth:`span`).  Returns (losses, bad)."""
        if self.mode is None:
            raise FmnumpyError("this CudaTrainer has no data source; use run_arrays")
        pos = step % self.C
        if pos + n > self.C:
            raise ValueError("a run must stay within one chunk of steps")
        self.launched = (pos, 0)
        self.mode_now = DATA_ARRAYS if self.mode == DATA_HOST else self.mode
        if self.mode in (DATA_STREAM, DATA_HOST):
            self._upload_chunk(step // self.C)
        self._begin(pos, n, step + 1, total)
        for c in range(pos, pos + n):
            self._step(c, step + 1 + c - pos)
            self.launched = (pos, c + 1 - pos)
        return self._finish(pos, n)

    def finish_interrupted(self):
        """After an interrupted :meth:`run`: (losses, bad) of the steps whose
        launches all went out (the optimizer writes only in the last launch)."""
        pos, n = self.launched
        return self._finish(pos, n)

    def span(self, step, remaining):
        """Steps that can run from ``step`` without crossing a chunk boundary."""
        return min(int(remaining), self.C - step % self.C)

    def _upload_chunk(self, chunk):
        if self.chunk_id == chunk:
            return
        if self.mode == DATA_HOST:    # [x0 | x1 | t (| eps) (| y)] (C, B, n_in) of a chunk
            s, D = self.stream, self.D
            s.batch_at(chunk * self.C)
            xin = np.empty((self.C, self.B, self.n_in), dtype=np.float32)
            xin[:, :, :D], xin[:, :, D:2 * D], xin[:, :, 2 * D] = s.x0, s.x1, s.t
            if self.noisy:
                self.noise.noise_at(chunk * self.C)
                xin[:, :, 2 * D + 1:3 * D + 1] = self.noise.eps
            if self.labels:
                xin[:, :, -1] = s.y           # small integers: exact in float32
        else:
            xin = np.ascontiguousarray(self.stream.x1_chunk(chunk), dtype=np.float32)
        self.xin = cuda_module().to_device(xin)
        self.chunk_id = chunk

    def run_arrays(self, x0, x1, t, step=0, total=None, y=None):
        """Take len(x0) steps on the given batches x0, x1 (n, B, D), t (n, B) and,
        conditional, labels y (n, B) (n <= C).  Returns (losses (n,), bad)."""
        x0, x1 = np.asarray(x0, np.float32), np.asarray(x1, np.float32)
        n = x0.shape[0]
        if n > self.C:
            raise ValueError(f"at most {self.C} steps per call")
        self._load_arrays(x0, x1, t, y)
        self._begin(0, n, step + 1, total if total is not None else step + n)
        for c in range(n):
            self._step(c, step + 1 + c)
        return self._finish(0, n)

    def _load_arrays(self, x0, x1, t, y=None):
        n, B, D = x0.shape
        if self.noisy:
            raise FmnumpyError("the sb and constant-sigma paths train on the host's stream and "
                               "noise")
        if self.labels and y is None:
            raise FmnumpyError("a conditional model needs the batches' labels y")
        xin = np.empty((n, B, self.n_in), dtype=np.float32)
        xin[:, :, :D], xin[:, :, D:2 * D], xin[:, :, 2 * D] = x0, x1, t
        if self.labels:
            xin[:, :, -1] = y
        self.xin = cuda_module().to_device(xin)
        self.chunk_id = None
        self.mode_now = DATA_ARRAYS
        self.launched = (0, 0)

    def loss_and_grad(self, x0, x1, t, y=None):
        """The twin of ``step.loss_and_grad`` on one batch x0, x1 (B, D), t (B,)
        (and labels y (B,) of a conditional network): returns (loss, dtheta (P,));
        the parameters are not changed."""
        self._load_arrays(np.asarray(x0, np.float32)[None], np.asarray(x1, np.float32)[None],
                          np.asarray(t, np.float32)[None],
                          None if y is None else np.asarray(y)[None])
        self.stats.copy_to_device(np.zeros((self.C, 2)))
        self._gradient(0)
        loss = float(self.stats.copy_to_host()[0, 0])
        return loss, self.state.copy_to_host()[GRAD].copy()


class CudaStepper:
    """``train.run``'s stepper on the GPU (the twin of ``step.CpuStepper``): the
    state lives on the device while training; the host's ``TrainState`` sees it
    in :meth:`pull` (before callbacks and checkpoints, at the end, on Ctrl-C or a
    non-finite loss).  Losses are read back once per run of steps, and a run
    never crosses a chunk of ``config.DATA_CHUNK_STEPS`` steps."""

    def __init__(self, trainer, state):
        self.tr = trainer
        trainer.upload(state.buf)

    def run(self, state, stream, n, total):
        """Same contract as ``step.CpuStepper.run`` (``stream`` is the trainer's)."""
        n = self.tr.span(state.step, n)
        losses, bad = self.tr.run(state.step, n, total)
        if bad:
            state.record(losses[:bad - 1 - state.step])
            return bad
        state.record(losses)
        return 0

    def pull(self, state):
        self.tr.download(state.buf)

    def interrupted(self, state):
        """After Ctrl-C: count the steps whose launches all went out, then pull."""
        losses, bad = self.tr.finish_interrupted()
        if not bad:
            state.record(losses)
        self.pull(state)
