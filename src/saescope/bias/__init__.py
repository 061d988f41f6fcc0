"""Gender bias: measure it, find the SAE features behind it, remove them, and report what it cost.

Example::

    import saescope
    lm, sae = saescope.load_model(), saescope.load_sae("default")
    before = saescope.bias.evaluate(lm)                       # BiasEvaluation (base only)
    plan = saescope.bias.plan_debias(lm, sae, "erase")        # chosen on training prompts only
    after = saescope.bias.evaluate(lm, plan.intervention)     # base vs intervened, changes, targets_met
    after.changes["abs_pearson_r"], after.intervened.winobias.preference

The shared core (``data``, ``benchmarks``, ``scoring``, ``cache``, ``evaluation``, ``report``,
``outputs``, ``gender_features``) serves three studies, each in its own sub-package: ``debias`` (one
module per method behind a registry), ``shift`` (SHIFT on biographies) and ``gender_vector`` (ROME's
gender vector). Names are imported lazily (pandas and scipy load only once one is used).
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"BiasData": "data", "SelectionPrompts": "data", "BiasDataFiles": "config",
            "DebiasConfig": "debias.config", "DebiasPlan": "debias.plan", "plan_debias": "debias.plan",
            "DebiasRun": "debias.run", "run_debias": "debias.run", "register_method": "debias.registry",
            "BiasEvaluation": "evaluation", "BiasScores": "evaluation", "evaluate": "evaluation",
            "rank_gender_features": "gender_features", "ShiftConfig": "shift.config", "run_shift": "shift.run",
            "GenderVectorConfig": "gender_vector.config", "run_gender_vector_study": "gender_vector.study"}
_SUBPACKAGES = ("debias", "shift", "gender_vector")
__all__ = sorted([*_EXPORTS, *_SUBPACKAGES])
__getattr__ = lazy_getattr("saescope.bias", {**{name: f"saescope.bias.{module}" for name, module in _EXPORTS.items()},
                                             **{name: f"saescope.bias.{name}" for name in _SUBPACKAGES}})
