"""Score intervals: known answers (perfect separation, chance), coverage of the true value in repeated draws,
and widths that shrink with more items."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from saescope.autointerp.intervals import auc_interval, balanced_interval, pearson_interval


def test_perfect_separation_and_too_few_items():
    assert auc_interval(np.array([3.0, 2.5, 2.0, 0.1, 0.0, -1.0]), np.array([1, 1, 1, 0, 0, 0])) == (1.0, 1.0)
    assert balanced_interval(np.array([True, True, False, False]), np.array([1, 1, 0, 0])) == (1.0, 1.0)
    assert all(math.isnan(v) for v in auc_interval(np.array([1.0, 0.0]), np.array([1, 0])))
    assert all(math.isnan(v) for v in pearson_interval(np.ones(5), np.arange(5.0)))


@pytest.mark.parametrize("kind", ["auc", "balanced", "pearson"])
def test_the_interval_covers_the_population_value_about_95_in_100_times(kind):
    rng = np.random.default_rng(0)
    truth = {"auc": 0.5 * (1 + math.erf(0.5)), "balanced": 0.5 * (0.8 + 0.7), "pearson": 0.6}[kind]
    covered, widths = 0, []
    for _ in range(60):
        if kind == "auc":  # N(1, 1) vs N(0, 1): AUC = Φ(1/√2)
            x, y = np.r_[rng.normal(1, 1, 20), rng.normal(0, 1, 20)], np.r_[np.ones(20), np.zeros(20)]
            low, high = auc_interval(x, y, seed=int(rng.integers(1 << 30)))
            assert low <= roc_auc_score(y, x) <= high
        elif kind == "balanced":
            y = np.r_[np.ones(20), np.zeros(20)]
            said = np.r_[rng.random(20) < 0.8, rng.random(20) < 0.3]
            low, high = balanced_interval(said, y, seed=int(rng.integers(1 << 30)))
        else:
            a = rng.normal(size=40)
            b = 0.6 * a + 0.8 * rng.normal(size=40)
            low, high = pearson_interval(a, b, seed=int(rng.integers(1 << 30)))
        covered += low <= truth <= high
        widths.append(high - low)
    assert 0.83 <= covered / 60 <= 1.0
    assert 0.1 < float(np.mean(widths)) < 0.6


def test_more_items_give_a_narrower_interval_and_the_same_items_the_same_interval():
    rng = np.random.default_rng(1)
    x, y = np.r_[rng.normal(1, 1, 200), rng.normal(0, 1, 200)], np.r_[np.ones(200), np.zeros(200)]
    small = auc_interval(np.r_[x[:10], x[200:210]], np.r_[y[:10], y[200:210]])
    large = auc_interval(x, y)
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])
    assert auc_interval(x, y) == large
