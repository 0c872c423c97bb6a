"""Thread limits shared by every family: BLAS's threads (SciPy's OpenBLAS, which
compiled ``np.dot`` calls) and Numba's (DEVELOPERS.md, Threads)."""


_CONTROLLER = []      # threadpoolctl's view of the loaded BLAS libraries, made once


def limit_blas(threads):
    """Limit every BLAS to ``threads`` threads until ``.restore_original_limits()``.

    Compiled ``np.dot`` calls SciPy's BLAS (``scipy.linalg.cython_blas``), a second
    OpenBLAS beside NumPy's that is loaded on first use; it is loaded here first,
    else threadpoolctl would not see it: the first parallel training run then
    nested two BLAS threads in each of Numba's (20x slower steps on 2 cores).  The
    libraries are looked up once per process (a ``ThreadpoolController``; 10 us a
    limit instead of 1 ms, which every ``fit`` and ``sample`` with ``threads`` pays)."""
    if not _CONTROLLER:
        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's OpenBLAS)
        from threadpoolctl import ThreadpoolController
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=int(threads), user_api="blas")


def single_threaded_blas():
    """Limit BLAS to one thread until ``.restore_original_limits()``: the sampler's
    particle chunks run on Numba's threads (see DEVELOPERS.md, Threads)."""
    return limit_blas(1)
