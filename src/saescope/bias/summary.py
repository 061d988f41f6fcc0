"""The table of chosen features in a debias report: gender statistics, promoted tokens, top tokens."""

from __future__ import annotations

import pandas as pd

from saescope.features.logit_effects import logit_effects
from saescope.features.run import FeatureRun
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE


def features_summary(lm: LoadedModel, sae: SAE, table: pd.DataFrame, features: list[int],
                     run: FeatureRun | None = None, n_tokens: int = 6) -> pd.DataFrame:
    """The chosen features with their gender statistics, promoted tokens and (given a RUN) top tokens and,
    when the RUN has them (``saescope explain``), explanations."""
    rows = table.set_index("feature").loc[features].reset_index()
    columns = ["feature", "kind", "stereotype_diff", "stereotype_q", "definitional_diff", "pair_delta"]
    rows = rows[columns].copy()
    if features:
        _, up_ids, _, _ = logit_effects(lm, sae, n=n_tokens, features=features)
        rows["promotes"] = [" ".join(repr(lm.tokenizer.decode([int(t)])) for t in ids) for ids in up_ids]
    if run is not None:
        run.check_sae(sae)
        stats = run.stats.set_index("feature")
        rows["top_tokens"] = [" ".join(repr(t) for t in list(stats.at[f, "top_tokens"])[:n_tokens]) for f in features]
        rows["log10_density"] = [float(stats.at[f, "log10_density"]) for f in features]
        if run.explanations():
            rows["explanation"] = run.explanation_labels(features)
    return rows
