"""Benchmarks: fmnumpy against the plain-PyTorch reference on the fixed workloads of
``bench/README.md`` (Workloads).  Run ``python -m bench --help``; see ``bench/README.md``.

Nothing is imported here: benchmark children pin their thread counts through the
environment before numpy, numba or torch is loaded, and this package must not load
them first.
"""
