"""Which features to explain: ``"0-199"``, ``"3,17,42"``, ``"top:kurtosis:200"`` or ``"random:200"`` (alive only)."""

from __future__ import annotations

import numpy as np

from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun

MIN_FIRINGS = 10


def alive_features(run: FeatureRun, min_firings: int = MIN_FIRINGS) -> np.ndarray:
    """Features that fired at least ``min_firings`` times in the RUN."""
    return run.stats.feature[run.stats["count"] >= min_firings].to_numpy()


def select_features(run: FeatureRun, spec: str, seed: int = 0) -> list[int]:
    """Feature ids from a spec (see the module docstring); ``top:`` and ``random:`` choose among alive features."""
    spec = spec.strip()
    try:
        if spec.startswith("top:"):
            _, column, count = spec.split(":")
            if column not in run.stats.columns:
                raise SaescopeError(f"unknown column {column!r} in {spec!r}: use one of {', '.join(run.stats.columns)}")
            alive = run.stats[run.stats.feature.isin(alive_features(run))]
            return [int(f) for f in alive.sort_values(column, ascending=False).feature.head(int(count))]
        if spec.startswith("random:"):
            alive = alive_features(run)
            count = min(int(spec.split(":")[1]), len(alive))
            return sorted(int(f) for f in np.random.default_rng(seed).choice(alive, count, replace=False))
        ids: list[int] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            low, _, high = part.partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first > last:
                raise SaescopeError(f"the range {part!r} is empty: write LOW-HIGH with LOW <= HIGH")
            if last >= run.d_sae:  # checked before the range is expanded: 0-999999999 must not fill memory
                raise SaescopeError(f"feature {last} is out of range: the SAE has {run.d_sae} features (0-{run.d_sae - 1})")
            ids += range(first, last + 1)
    except ValueError:
        raise SaescopeError(f"cannot read the feature list {spec!r}: use 0-199, 3,17,42, top:kurtosis:200 "
                            "or random:200") from None
    if not ids:
        raise SaescopeError(f"the feature list {spec!r} is empty")
    return [run.check_feature(f) for f in dict.fromkeys(ids)]
