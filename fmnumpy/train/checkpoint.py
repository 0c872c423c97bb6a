"""Checkpoints: one ``.npz`` file with the config, parameters, optimizer
state, EMA weights, step counter and RNG state, written atomically.

Atomic: the file is written to a temporary name in the same folder and then
renamed over the target (``os.replace``), so a crash or Ctrl-C while saving
leaves the previous checkpoint intact.

RNG state: every random draw of training is taken from a generator seeded by
``(seed, purpose, counter)`` (see ``train.py``), so the pair (seed, step) is the
complete RNG state; it is stored together with the generator's name.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from fmnumpy.config import CHECKPOINT_VERSION
from fmnumpy.errors import FmnumpyError

MAGIC = "fmnumpy-checkpoint"
ARRAYS = ("theta", "m", "v", "ema", "losses")


def save_checkpoint(path, meta, arrays):
    """Write ``meta`` (a JSON-able dict) and ``arrays`` to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    meta = dict(meta, magic=MAGIC, version=CHECKPOINT_VERSION)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path):
    """-> (meta dict, {name: array}).  Any unusable file raises FmnumpyError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FmnumpyError(f"checkpoint {path} does not exist; pass the .npz file "
                           "written by `fmnumpy train` (e.g. results/checkpoint.npz)")
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise FmnumpyError(f"{path} is not an fmnumpy checkpoint (not an .npz "
                                   "archive); pass a file written by `fmnumpy train`")
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "meta" not in files:
                raise FmnumpyError(f"{path} is not an fmnumpy checkpoint (no metadata); "
                                   "pass a file written by `fmnumpy train`")
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in files if k != "meta"}
    except FmnumpyError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise FmnumpyError(f"{path} is not a readable fmnumpy checkpoint (truncated or "
                           f"not a checkpoint: {type(e).__name__}); retrain or pass another "
                           "file") from None
    if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
        raise FmnumpyError(f"{path} is not an fmnumpy checkpoint; pass a file written by "
                           "`fmnumpy train`")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise FmnumpyError(f"{path} was written by checkpoint format version "
                           f"{meta.get('version')}, this fmnumpy reads version "
                           f"{CHECKPOINT_VERSION}; retrain with this version")
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise FmnumpyError(f"{path} is incomplete (missing {', '.join(missing)}); retrain "
                           "or pass another checkpoint")
    return meta, arrays
