"""Keep Numba's on-disk cache of fmnumpy's compiled functions consistent.

Numba checks a cached function against the modification time of its own source
file only, not against the files of the functions it calls (and inlines): after
``activations.py`` changes, the cached machine code of ``mlp.py`` would still
hold the old activation.  So at import, a hash of every fmnumpy source file is
compared with the one stored beside the cache; when it differs, all of fmnumpy's
cache files are removed and compiled afresh on first use.  Plain Python and the
standard library only: it runs before any compiled module is imported.
"""
import glob
import hashlib
import os

STAMP = "fmnumpy-sources.sha1"


def _cache_dirs(root):
    """The __pycache__ folders Numba uses for the package's source folders: beside
    the sources, and under NUMBA_CACHE_DIR when that is set."""
    user = os.environ.get("NUMBA_CACHE_DIR")
    for folder, _, files in os.walk(root):
        if os.path.basename(folder) == "__pycache__" or not any(f.endswith(".py") for f in files):
            continue
        yield os.path.join(folder, "__pycache__")
        if user:
            drive, tail = os.path.splitdrive(os.path.abspath(folder))
            yield os.path.join(user, tail.lstrip(os.sep))


def sources_hash(root):
    h = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def drop_stale_cache(root):
    """Remove fmnumpy's Numba cache files if the sources changed since they were written.
    Never raises: an unwritable or missing cache folder is left alone."""
    try:
        digest = sources_hash(root)
        stamp = os.path.join(root, "__pycache__", STAMP)
        try:
            with open(stamp) as f:
                if f.read().strip() == digest:
                    return
        except OSError:
            pass
        for folder in _cache_dirs(root):
            for path in glob.glob(os.path.join(folder, "*.nbi")) + \
                    glob.glob(os.path.join(folder, "*.nbc")):
                try:
                    os.remove(path)
                except OSError:
                    pass
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        with open(stamp, "w") as f:
            f.write(digest + "\n")
    except OSError:
        pass
