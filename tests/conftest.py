"""Shared test set-up: this folder on the import path (so that tests import their
shared references as ``from reference import ...``), and fixtures."""
import os
import sys

import numba
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def restore_numba_threads():
    """Put Numba's thread count back after a module that changes it."""
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)
