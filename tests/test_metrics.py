"""Tests for fmnumpy.metrics: W2, MMD, energy distance, straightness, evaluate.
N, M numbers of points, D dimension.  Hand-made values are derived in the
comments; SciPy is a second opinion where it has the same statistic."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmnumpy.couplings import distances
from fmnumpy import metrics as mt
from fmnumpy.errors import FmnumpyError

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def cloud(N, D=2, seed=0):
    return np.random.default_rng(seed).standard_normal((N, D))


# ---- squared distances ------------------------------------------------------------------

def test_sq_dists_matches_broadcasting_and_is_exact_on_the_diagonal():
    a, b = cloud(30, 3, 1), cloud(20, 3, 2)
    np.testing.assert_allclose(distances.sq_dists(a, b), ((a[:, None] - b[None]) ** 2).sum(-1),
                               rtol=1e-14)
    a = cloud(50, 2, 3) * 1e4 + 1e6                  # large offset: no cancellation
    assert np.all(np.diag(distances.sq_dists(a, a)) == 0.0)
    assert distances.sq_dists(a.astype(np.float32), a.astype(np.float32)).dtype == np.float64


# ---- W2 ----------------------------------------------------------------------------------

def test_w2_of_a_set_with_itself_is_zero():
    a = cloud(300)
    assert mt.w2(a, a) == 0.0
    assert mt.w2(a, a[np.random.default_rng(0).permutation(300)]) == 0.0


@pytest.mark.parametrize("c", [(3.0, -4.0), (0.01, 0.0), (-2.0, 7.5)])
def test_w2_of_a_shifted_set_is_the_shift_length(c):
    """For a translation the identity pairing is optimal (cyclical
    monotonicity), so W2 = ||c||."""
    a = cloud(200, seed=5)
    assert mt.w2(a, a + np.array(c)) == pytest.approx(np.hypot(*c), rel=1e-12)


@SETTINGS
@given(N=st.integers(1, 6), D=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_w2_matches_brute_force(N, D, seed):
    a, b = cloud(N, D, seed), cloud(N, D, seed + 1) + 1.0
    C = ((a[:, None] - b[None]) ** 2).sum(-1)
    best = min(C[np.arange(N), list(p)].mean() for p in itertools.permutations(range(N)))
    assert mt.w2(a, b) == pytest.approx(math.sqrt(best), rel=1e-12, abs=1e-15)


def test_w2_in_one_dimension_pairs_sorted_points():
    a, b = cloud(500, 1, 7), cloud(500, 1, 8) * 2 + 1
    expected = math.sqrt(((np.sort(a[:, 0]) - np.sort(b[:, 0])) ** 2).mean())
    assert mt.w2(a, b) == pytest.approx(expected, rel=1e-12)


def test_w2_errors():
    with pytest.raises(FmnumpyError, match="equally many"):
        mt.w2(cloud(3), cloud(4))
    with pytest.raises(FmnumpyError, match="same D"):
        mt.w2(cloud(3, 2), cloud(3, 3))


# ---- MMD ---------------------------------------------------------------------------------

def test_biased_mmd_of_a_set_with_itself_is_zero():
    a = cloud(200)
    assert 0.0 <= mt.mmd_rbf(a, a) < 1e-13                  # rounding only
    assert 0.0 <= mt.mmd_rbf(a, a, bandwidths=[0.1, 1.0, 10.0]) < 1e-13


def test_mmd_hand_values():
    a, b = np.array([[0.0]]), np.array([[1.0]])
    # one point each, distance 1: k_aa = k_bb = 1, k_ab = exp(-1 / (2 h^2))
    assert mt.mmd_rbf(a, b, bandwidths=1.0) == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-14)
    # several bandwidths average their kernels
    want = np.mean([2 - 2 * math.exp(-1 / (2 * h * h)) for h in (0.5, 2.0)])
    assert mt.mmd_rbf(a, b, bandwidths=[0.5, 2.0]) == pytest.approx(want, rel=1e-14)
    # default: the median distance of the pooled set {0, 1} is 1, scales 0.5, 1, 2
    want = np.mean([2 - 2 * math.exp(-1 / (2 * h * h)) for h in (0.5, 1.0, 2.0)])
    assert mt.mmd_rbf(a, b) == pytest.approx(want, rel=1e-14)
    # unbiased, a = b = {0, 1}, h = 1, k = exp(-1/2): the within-set averages
    # skip i = i', (k + k) / 2 = k each; the cross average is (2 + 2k) / 4,
    # so MMD^2_u = k + k - (1 + k) = k - 1 < 0
    ab = np.array([[0.0], [1.0]])
    assert mt.mmd_rbf(ab, ab, bandwidths=1.0, unbiased=True) == pytest.approx(
        math.exp(-0.5) - 1, rel=1e-14)


def test_mmd_matches_a_dense_reference():
    a, b = cloud(40, 3, 1), cloud(55, 3, 2) + 0.3
    h = np.array([0.7, 1.9])

    def k(x, y):
        d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
        return np.mean([np.exp(-d2 / (2 * s * s)) for s in h], axis=0)

    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    biased = kaa.mean() + kbb.mean() - 2 * kab.mean()
    unbiased = ((kaa.sum() - np.trace(kaa)) / (40 * 39) + (kbb.sum() - np.trace(kbb)) / (55 * 54)
                - 2 * kab.mean())
    assert mt.mmd_rbf(a, b, h) == pytest.approx(biased, rel=1e-12)
    assert mt.mmd_rbf(a, b, h, unbiased=True) == pytest.approx(unbiased, rel=1e-12)


def test_mmd_separates_distributions():
    a, b, c = cloud(300, seed=1), cloud(300, seed=2), cloud(300, seed=3) + 1.0
    assert mt.mmd_rbf(a, c) > 10 * mt.mmd_rbf(a, b)


def test_mmd_errors():
    a = cloud(5)
    for bad in (0.0, -1.0, [1.0, np.nan], []):
        with pytest.raises(FmnumpyError, match="bandwidths"):
            mt.mmd_rbf(a, a, bandwidths=bad)
    with pytest.raises(FmnumpyError, match="at least 2"):
        mt.mmd_rbf(a[:1], a, unbiased=True)


# ---- energy distance ---------------------------------------------------------------------

def test_energy_distance_of_a_set_with_itself_is_zero():
    a = cloud(200)
    assert 0.0 <= mt.energy_distance(a, a) < 1e-12            # rounding only


def test_energy_distance_hand_values():
    # {0} vs {1}: 2 * 1 - 0 - 0
    assert mt.energy_distance([[0.0]], [[1.0]]) == pytest.approx(2.0, rel=1e-15)
    # {(0,0), (3,4)} vs {(0,0)}: cross mean (0 + 5) / 2 = 2.5, within a: 2 * 5 / 4
    # = 2.5, within b: 0, so E = 5 - 2.5 = 2.5
    assert mt.energy_distance([[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0]]) == pytest.approx(2.5)


def test_energy_distance_matches_scipy_in_one_dimension():
    stats = pytest.importorskip("scipy.stats")
    a, b = cloud(70, 1, 4), cloud(90, 1, 5) * 1.5 + 0.2
    assert mt.energy_distance(a, b) == pytest.approx(
        stats.energy_distance(a[:, 0], b[:, 0]) ** 2, rel=1e-10)


def test_energy_distance_is_symmetric_and_positive():
    a, b = cloud(50, 3, 1), cloud(60, 3, 2) + 0.5
    assert mt.energy_distance(a, b) == pytest.approx(mt.energy_distance(b, a), rel=1e-13)
    assert mt.energy_distance(a, b) > 0


# ---- straightness ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_straightness_of_a_constant_field_is_zero(method):
    c = np.array([1.5, -2.0])
    S = mt.straightness(lambda x, t: np.broadcast_to(c, x.shape), cloud(100), steps=7,
                        method=method)
    assert S == pytest.approx(0.0, abs=1e-24)


def test_straightness_of_a_time_varying_straight_field():
    """v = t c: straight lines at a varying speed.  Exactly, x1 - x0 = c / 2 and
    S = ||c||^2 int (1/2 - t)^2 dt = ||c||^2 / 12.  With Euler on n steps the
    chord is c (n - 1) / (2 n) and S is ||c||^2 times the variance of the grid
    t_k = k / n, (1 - 1/n^2) / 12."""
    c = np.array([3.0, 4.0])
    field = lambda x, t: np.broadcast_to(t * c, x.shape)   # noqa: E731
    n = 10
    assert mt.straightness(field, cloud(5), n, "euler") == pytest.approx(
        25 * (1 - 1 / n**2) / 12, rel=1e-12)
    assert mt.straightness(field, cloud(5), 200, "rk4") == pytest.approx(25 / 12, rel=1e-4)


def test_straightness_of_a_linear_field():
    """v = x: x_t = x0 e^t, chord x0 (e - 1), so
    S = E||x0||^2 int (e - 1 - e^t)^2 dt = E||x0||^2 ((e^2 - 1) / 2 - (e - 1)^2)."""
    x0 = cloud(50, seed=9)
    want = (x0**2).sum(1).mean() * ((math.e**2 - 1) / 2 - (math.e - 1) ** 2)
    assert mt.straightness(lambda x, t: x, x0, 200, "rk4") == pytest.approx(want, rel=1e-4)
    assert mt.straightness(lambda x, t: x, x0, 4000, "euler") == pytest.approx(want, rel=2e-3)


def test_straightness_accepts_a_model_like_velocity():
    class Model:                      # the signature of FlowMatcher.velocity
        def velocity(self, x, t, ema=True):
            return (np.asarray(x, np.float32) * 0 + np.float32(t)).astype(np.float32)

    assert mt.straightness(Model().velocity, cloud(4), steps=4) > 0


def test_straightness_errors():
    with pytest.raises(FmnumpyError, match="steps"):
        mt.straightness(lambda x, t: x, cloud(3), steps=0)
    with pytest.raises(FmnumpyError, match="method"):
        mt.straightness(lambda x, t: x, cloud(3), method="heun")
    with pytest.raises(FmnumpyError, match="shape"):
        mt.straightness(lambda x, t: x[:, :1], cloud(3))


# ---- evaluate ----------------------------------------------------------------------------

def test_evaluate():
    a, b = cloud(120, seed=1), cloud(100, seed=2) + 0.5
    out = mt.evaluate(a, b)
    assert set(out) == {"w2", "mmd", "energy", "n"} and out["n"] == 100
    assert out["w2"] == pytest.approx(mt.w2(a[:100], b))
    assert out["mmd"] == pytest.approx(mt.mmd_rbf(a[:100], b))
    assert out["energy"] == pytest.approx(mt.energy_distance(a[:100], b))
    assert mt.evaluate(a, b, max_points=30)["n"] == 30
    same = mt.evaluate(a, a)
    assert same["w2"] == 0.0 and same["mmd"] < 1e-13 and same["energy"] < 1e-12
