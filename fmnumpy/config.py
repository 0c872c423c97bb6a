"""Tunables in one place: dtype, threads per block, fastmath, tolerances."""
import numpy as np

DTYPE = np.float32            # parameters, gradients, activations, samples
CHECKPOINT_VERSION = 1        # bump when the checkpoint layout changes
DATA_CHUNK_STEPS = 64         # training batches drawn per RNG chunk (euclidean/stream.py)
# Up to this data dimension FlowMatcher's x_freqs=None means plane-wave features of x
# (3 octaves on the CPU) and x_dirs="auto" the axes and diagonals (D^2 directions);
# above it no plane waves, and an explicit x_freqs runs along the axes alone (D), so
# the input width grows linearly with D (bench/results/x_freqs_dims.md)
FOURIER_UP_TO = 4

# CUDA launch settings; tests shrink them so tiny inputs span several blocks.
CUDA_THREADS_PER_BLOCK = 128
CUDA_FASTMATH = False
# fastmath per fused MLP kernel (None: CUDA_FASTMATH): fast exp/sin/cos (__expf),
# flush-to-zero and fused multiply-adds.  The sampler's outputs stay within 1e-5
# of the exact kernel; the training gradient keeps the exact math by default.
CUDA_FASTMATH_SAMPLER = True
CUDA_FASTMATH_FORWARD_BACKWARD = None
