"""95 % intervals of explanation scores, by bootstrap over the scored items (``scipy.stats.bootstrap``).

A score is measured on a few dozen items (contexts), so two explanations 0.05 apart are often not
different. Each scorer gives its score an interval from the same items:
- ``auc`` (embedding, and the AUC of the Yes/No scorers) and ``balanced`` accuracy (detection, fuzzing,
  intervention): positives and negatives are resampled separately (``paired=False``), so each resample
  keeps both classes;
- ``pearson`` (simulation): (prediction, activation) pairs are resampled together (``paired=True``).

Percentile intervals of 1,000 resamples with a fixed seed (the same items give the same interval); NaN
when a class has fewer than two items or the statistic is undefined on every resample.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import bootstrap

RESAMPLES = 1000
LEVEL = 0.95


def _auc(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mann-Whitney AUC along ``axis`` (ties count one half), for batches of resamples."""
    pos, neg = np.moveaxis(pos, axis, -1), np.moveaxis(neg, axis, -1)
    diff = pos[..., :, None] - neg[..., None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1))


def _balanced(said_pos: np.ndarray, said_neg: np.ndarray, axis: int = -1) -> np.ndarray:
    return 0.5 * (said_pos.mean(axis=axis) + (1 - said_neg).mean(axis=axis))


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    x, y = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1))


def _interval(data: tuple[np.ndarray, ...], statistic, paired: bool, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap(data, statistic, n_resamples=RESAMPLES, confidence_level=LEVEL, method="percentile",
                           paired=paired, vectorized=True, random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else (math.nan, math.nan)


def auc_interval(margins: np.ndarray, truth: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Interval of the AUC of ``margins`` for labels ``truth`` (1 positive, 0 negative)."""
    return _by_class(margins, truth, _auc, seed)


def balanced_interval(said: np.ndarray, truth: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Interval of the balanced accuracy of Yes answers ``said`` (bool) for labels ``truth``."""
    return _by_class(said, truth, _balanced, seed)


def _by_class(values: np.ndarray, truth: np.ndarray, statistic, seed: int) -> tuple[float, float]:
    """A two-sample statistic's interval, positives and negatives resampled separately."""
    values, truth = np.asarray(values, dtype=float), np.asarray(truth)
    pos, neg = values[truth == 1], values[truth == 0]
    if len(pos) < 2 or len(neg) < 2:
        return math.nan, math.nan
    return _interval((pos, neg), statistic, False, seed)


def pearson_interval(predicted: np.ndarray, actual: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Interval of Pearson's r between ``predicted`` and ``actual`` (paired items)."""
    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if len(predicted) < 3 or predicted.std() == 0 or actual.std() == 0:
        return math.nan, math.nan
    return _interval((predicted, actual), _pearson, True, seed)
