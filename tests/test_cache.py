"""fmnumpy._cache: Numba cache files are dropped when any source file changes."""
import os

from fmnumpy._cache import STAMP, drop_stale_cache


def _touch(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_cache_files_are_dropped_only_when_a_source_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    root = str(tmp_path / "pkg")
    _touch(os.path.join(root, "a.py"), "A = 1\n")
    _touch(os.path.join(root, "sub", "b.py"), "B = 1\n")
    cached = [os.path.join(root, "__pycache__", "a.f-1.py311.nbi"),
              os.path.join(root, "sub", "__pycache__", "b.g-2.py311.1.nbc")]
    keep = os.path.join(root, "__pycache__", "a.cpython-311.pyc")
    for p in cached + [keep]:
        _touch(p)
    drop_stale_cache(root)                       # no stamp yet: drop
    assert not any(os.path.exists(p) for p in cached) and os.path.exists(keep)
    assert os.path.exists(os.path.join(root, "__pycache__", STAMP))
    for p in cached:
        _touch(p)
    drop_stale_cache(root)                       # same sources: keep
    assert all(os.path.exists(p) for p in cached)
    _touch(os.path.join(root, "sub", "b.py"), "B = 2\n")
    drop_stale_cache(root)                       # a dependency changed: drop everything
    assert not any(os.path.exists(p) for p in cached)


def test_user_cache_dir_is_cleaned_too(tmp_path, monkeypatch):
    root = str(tmp_path / "pkg")
    user = str(tmp_path / "numba_cache")
    monkeypatch.setenv("NUMBA_CACHE_DIR", user)
    _touch(os.path.join(root, "a.py"))
    mirrored = os.path.join(user, os.path.abspath(root).lstrip(os.sep), "a.f-1.py311.nbi")
    _touch(mirrored)
    drop_stale_cache(root)
    assert not os.path.exists(mirrored)


def test_unwritable_or_missing_root_never_raises(tmp_path):
    drop_stale_cache(str(tmp_path / "does-not-exist"))
