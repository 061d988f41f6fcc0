"""``ablate`` and ``cap``: act on the strongest stereotype features of the SAE.

- ``ablate``: set the chosen features to 0 (the SAE's error term is kept); strength = how many;
- ``cap``: cap each chosen feature at the level it has on the *other* gender's stereotyped occupations
  (``min(a, level)``): the stereotyped excess goes, the feature's ordinary use stays.

``--features auto`` takes the strongest features of kind ``stereotype`` (``bias.gender_features``).
"""

from __future__ import annotations

import pandas as pd

from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.gender_features import stereotype_features
from saescope.errors import SaescopeError
from saescope.sae.core import SAE
from saescope.steering import FeatureEdit, FeatureSteering, Intervention

FEATURE_COUNTS = (4, 8, 16, 32)


def _feature_levels(table: pd.DataFrame, features: list[int]) -> dict[int, float]:
    by_feature = table.set_index("feature")
    return {f: float(min(by_feature.at[f, "female_occupations"], by_feature.at[f, "male_occupations"]))
            for f in features}


def feature_intervention(sae: SAE, method: str, features: list[int], table: pd.DataFrame, hook: str) -> Intervention:
    """``ablate`` (set to 0) or ``cap`` (at the other gender's occupation level) the given features."""
    if not features:
        raise SaescopeError("no features to intervene on")
    if method == "ablate":
        return FeatureSteering(sae, [FeatureEdit(f, "ablate", 0.0) for f in features], hook)
    levels = _feature_levels(table, features)
    return FeatureSteering(sae, [FeatureEdit(f, "cap", levels[f]) for f in features], hook)


def _candidates(ctx: MethodContext, method: str) -> list[Candidate]:
    chosen = stereotype_features(ctx.table, max(FEATURE_COUNTS)) if ctx.features == "auto" else list(ctx.features)
    if not chosen:
        raise SaescopeError("no stereotype feature found on the selection prompts: give the features explicitly")
    counts = sorted({min(int(n), len(chosen)) for n in (ctx.config.strengths or FEATURE_COUNTS)})
    return [(f"{n} features", chosen[:n], feature_intervention(ctx.sae, method, chosen[:n], ctx.table, ctx.hook))
            for n in counts if n > 0]


@register_method("ablate")
def ablate(ctx: MethodContext) -> list[Candidate]:
    """Ablate the top 4, 8, 16, 32 stereotype features (or ``strengths`` of them)."""
    return _candidates(ctx, "ablate")


@register_method("cap")
def cap(ctx: MethodContext) -> list[Candidate]:
    """Cap the top 4, 8, 16, 32 stereotype features at the other gender's occupation level."""
    return _candidates(ctx, "cap")
