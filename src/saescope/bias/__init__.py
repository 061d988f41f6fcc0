"""Gender bias: measure it, find the SAE features behind it, remove them, and report what it cost.

Example::

    import saescope
    lm, sae = saescope.load_model(), saescope.load_sae("default")
    before = saescope.bias.evaluate(lm)                       # BiasEvaluation (base only)
    plan = saescope.bias.plan_debias(lm, sae, "erase")        # chosen on training prompts only
    after = saescope.bias.evaluate(lm, plan.intervention)     # base vs intervened, changes, targets_met
    after.changes["abs_pearson_r"], after.intervened.winobias.preference

Names are imported lazily (this package needs pandas and scipy only once one is used).
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"BiasData": "data", "SelectionPrompts": "data", "DebiasConfig": "config", "DebiasPlan": "debias",
            "plan_debias": "debias", "BiasEvaluation": "evaluation", "BiasScores": "evaluation", "evaluate": "evaluation",
            "rank_gender_features": "gender_features", "GenderVectorConfig": "gender_vector_config",
            "run_gender_vector_study": "gender_vector_study"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.bias", {name: f"saescope.bias.{module}" for name, module in _EXPORTS.items()})
