"""Search a features RUN: features that fire most on a vocabulary token, or on a given text."""

from __future__ import annotations

import pandas as pd

from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.sae.text import encode_text


def features_for_token(run: FeatureRun, token: str, n: int = 15) -> pd.DataFrame:
    """Features whose top tokens include ``token`` (exact text, e.g. ``" she"``), by max activation.

    Example::

        features_for_token(run, " she").head()
    """
    hits = run.top_tokens.iloc[run.rows_of_token(token)]
    if hits.empty:
        raise SaescopeError(f"no feature has {token!r} among its top tokens in {run.path} "
                            "(tokens carry their leading space, e.g. ' she')")
    hits = hits.sort_values("max_activation", ascending=False).head(n)
    stats = run.stats.set_index("feature")
    return pd.DataFrame({"feature": hits.feature.values, "max_on_token": hits.max_activation.values,
                         "rank_of_token": hits["rank"].values,
                         "log10_density": stats.loc[hits.feature, "log10_density"].values,
                         "top_tokens": stats.loc[hits.feature, "top_tokens"].values})


def features_for_text(run: FeatureRun, lm: LoadedModel, sae: SAE, hook: str, text: str, n: int = 15) -> pd.DataFrame:
    """Features active on ``text``, by their activation relative to their corpus max."""
    tokens, feats = encode_text(lm, sae, hook, text)
    peak, where = feats.max(dim=0)
    stats = run.stats
    relative = peak.numpy() / stats["max"].clip(lower=1e-9).values
    order = [f for f in relative.argsort()[::-1][:n] if peak[f] > 0]
    return pd.DataFrame({"feature": order, "activation": [float(peak[f]) for f in order],
                         "of_corpus_max": [float(relative[f]) for f in order],
                         "on_token": [tokens[int(where[f])] for f in order],
                         "top_tokens": [stats.top_tokens.iloc[f] for f in order]})
