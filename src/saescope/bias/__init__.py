"""Gender bias: measure it, find the SAE features behind it, remove them, and report what it cost.

Example::

    import saescope
    lm, sae = saescope.load_model(), saescope.load_sae("default")
    before = saescope.bias.evaluate(lm)                       # BiasEvaluation (base only)
    plan = saescope.bias.plan_debias(lm, sae, "project")      # chosen on training prompts only
    after = saescope.bias.evaluate(lm, plan.intervention)     # base vs intervened, changes, targets_met
    after.changes["abs_pearson_r"], after.intervened.winobias.preference
"""

from saescope.bias.data import BiasData, SelectionPrompts
from saescope.bias.debias import DebiasPlan, plan_debias
from saescope.bias.evaluate import BiasEvaluation, BiasScores, evaluate
from saescope.bias.gender_features import rank_gender_features

__all__ = ["BiasData", "BiasEvaluation", "BiasScores", "DebiasPlan", "SelectionPrompts", "evaluate", "plan_debias",
           "rank_gender_features"]
