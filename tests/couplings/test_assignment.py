"""Tests for fmnumpy.assignment: the hand-written Jonker-Volgenant solver.

The reference is our own: brute force over all permutations for N <= 7, and
for larger N the dual certificate (u_i + v_j <= C_ij everywhere, equality on
the assignment), which proves optimality by LP duality without any other
solver.  SciPy's linear_sum_assignment is a second opinion when installed.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import njit

from fmnumpy.couplings.assignment import (fmax, fmin, lapjv, lapjv_into, linear_assignment,
    work_sizes)
from fmnumpy.errors import FmnumpyError

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def brute_force_cost(C):
    N = C.shape[0]
    rows = np.arange(N)
    return min(C[rows, list(p)].sum() for p in itertools.permutations(range(N)))


def assert_permutation(cols, N):
    assert cols.dtype == np.int64 and cols.shape == (N,)
    assert np.array_equal(np.sort(cols), np.arange(N))


def assert_certificate(C, cols, u, v):
    """cols is optimal: feasible duals, tight on the assignment."""
    N = C.shape[0]
    scale = max(1.0, float(np.abs(C).max()))
    assert_permutation(cols, N)
    assert (C - u[:, None] - v[None, :]).min() >= -1e-9 * scale
    np.testing.assert_allclose(C[np.arange(N), cols], u + v[cols], rtol=0, atol=1e-9 * scale)


def matrices(rng, N):
    """Random, integer and degenerate cost matrices of size N."""
    pts_a, pts_b = rng.standard_normal((N, 2)), rng.standard_normal((N, 2)) * 2 + 1
    yield "uniform", rng.random((N, N))
    yield "integer", rng.integers(0, 10, (N, N)).astype(np.float64)
    yield "binary", rng.integers(0, 2, (N, N)).astype(np.float64)
    yield "zeros", np.zeros((N, N))
    yield "constant", np.full((N, N), 3.5)
    yield "rank one", np.outer(rng.random(N), rng.random(N))
    yield "repeated rows", np.tile(rng.random(N), (N, 1))
    yield "negative", -rng.random((N, N)) * 1e3
    yield "sq distances", ((pts_a[:, None] - pts_b[None]) ** 2).sum(-1)


# ---- against brute force ----------------------------------------------------------------

@SETTINGS
@given(N=st.integers(1, 7), seed=st.integers(0, 2**31 - 1), integer=st.booleans())
def test_matches_brute_force(N, seed, integer):
    rng = np.random.default_rng(seed)
    C = rng.integers(0, 4, (N, N)).astype(np.float64) if integer else rng.standard_normal((N, N))
    cols = linear_assignment(C)
    assert_permutation(cols, N)
    assert C[np.arange(N), cols].sum() == pytest.approx(brute_force_cost(C), abs=1e-12)


@pytest.mark.parametrize("N", [1, 2, 5, 7])
def test_degenerate_small_matrices_match_brute_force(N):
    for name, C in matrices(np.random.default_rng(N), N):
        cols = linear_assignment(C)
        assert C[np.arange(N), cols].sum() == pytest.approx(brute_force_cost(C), abs=1e-9), name


# ---- the dual certificate on larger problems --------------------------------------------

@pytest.mark.parametrize("N", [8, 33, 100, 257])
def test_dual_certificate(N):
    for name, C in matrices(np.random.default_rng(100 + N), N):
        cols, u, v = lapjv(C)
        assert_certificate(C, cols, u, v)
        assert np.array_equal(cols, linear_assignment(C)), name


def test_scale_and_shift_invariance():
    """Adding a constant to a row or a column, or scaling by a positive number,
    does not change the set of optimal assignments."""
    rng = np.random.default_rng(3)
    C = rng.random((40, 40))
    best = C[np.arange(40), linear_assignment(C)].sum()
    D = 7.0 * C + rng.random(40)[:, None] + rng.random(40)[None, :]
    assert C[np.arange(40), linear_assignment(D)].sum() == pytest.approx(best, abs=1e-12)


def test_identity_is_optimal_for_a_diagonal_minimum():
    C = np.ones((6, 6)) - np.eye(6)
    assert np.array_equal(linear_assignment(C), np.arange(6))


@SETTINGS
@given(N=st.integers(1, 40), seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(
    ["normal", "integer", "points"]))
def test_any_row_guess_gives_an_optimal_assignment(N, seed, kind):
    """u0 only changes the speed: with any finite guess of the size of the
    costs the dual certificate holds and the cost is the u0 = 0 optimum."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        C = rng.standard_normal((N, N))
    elif kind == "integer":
        C = rng.integers(0, 3, (N, N)).astype(np.float64)
    else:
        a, b = rng.standard_normal((2, N, 2))
        C = ((a[:, None] - b[None]) ** 2).sum(-1)
    scale = max(1.0, np.abs(C).max())
    best = C[np.arange(N), linear_assignment(C)].sum()
    for u0 in (rng.uniform(-scale, scale, N), np.full(N, 2.5 * scale), C.min(1), C.max(1)):
        cols, u, v = lapjv(C, u0)
        assert_certificate(C, cols, u, v)
        assert C[np.arange(N), cols].sum() == pytest.approx(best, rel=1e-12, abs=1e-12 * scale)


def test_bad_row_guess_raises():
    C = np.zeros((3, 3))
    for u0 in (np.zeros(2), np.array([0.0, np.nan, 0.0]), np.array([0.0, np.inf, 0.0])):
        with pytest.raises(FmnumpyError, match="u0"):
            linear_assignment(C, u0)


@njit(cache=True)
def _solve_into(C, u0, x, y, v, fwork, iwork):
    lapjv_into(C, u0, x, y, v, fwork, iwork)


def test_work_buffers_need_no_initialisation():
    """lapjv_into reads nothing it did not write: garbage (NaN, huge
    indices) in the caller's buffers and outputs changes no result."""
    rng = np.random.default_rng(5)
    N = 64
    a, b = rng.standard_normal((2, N, 2))
    C = ((a[:, None] - b[None]) ** 2).sum(-1)
    nf, ni = work_sizes(N)
    results = []
    for fill_f, fill_i in ((0.0, 0), (np.nan, 2**30), (-np.inf, -7)):
        x = np.full(N, fill_i, dtype=np.int64)
        y = np.full(N, fill_i, dtype=np.int32)
        v = np.full(N, fill_f)
        _solve_into(C, np.zeros(N), x, y, v, np.full(nf, fill_f), np.full(ni, fill_i, np.int32))
        assert_permutation(x, N)
        assert np.array_equal(y[x], np.arange(N))          # y is the inverse of x
        results.append(x)
    assert all(np.array_equal(results[0], r) for r in results)


@njit(cache=True)
def _min_max(a, b):
    return fmin(a, b), fmax(a, b)


@SETTINGS
@given(a=st.floats(allow_nan=False), b=st.floats(allow_nan=False))
def test_fmin_fmax_are_min_max(a, b):
    lo, hi = _min_max(a, b)
    assert lo == min(a, b) and hi == max(a, b)


def test_empty_and_float32_input():
    assert linear_assignment(np.zeros((0, 0))).shape == (0,)
    C = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    cols, u, v = lapjv(C)
    assert_certificate(C.astype(np.float64), cols, u, v)


@pytest.mark.parametrize("C", [np.zeros((3, 4)), np.zeros(3), np.array([[0.0, np.inf], [1, 2]]),
                               np.array([[np.nan, 0.0], [1, 2]])])
def test_bad_input_raises(C):
    with pytest.raises(FmnumpyError):
        linear_assignment(C)


# ---- second opinion ---------------------------------------------------------------------

@pytest.mark.parametrize("N", [3, 16, 64, 150, 256])
def test_matches_scipy_optimal_cost(N):
    optimize = pytest.importorskip("scipy.optimize")
    for name, C in matrices(np.random.default_rng(N), N):
        r, c = optimize.linear_sum_assignment(C)
        ours = C[np.arange(N), linear_assignment(C)].sum()
        assert ours == pytest.approx(C[r, c].sum(), rel=1e-12, abs=1e-9), name
