"""Find features by what their explanation says (``saescope features search RUN --explanation "gender"``)."""

from __future__ import annotations

import pandas as pd

from saescope.autointerp.explain import read_explanations
from saescope.embeddings import sentence_embeddings
from saescope.errors import SaescopeError, check_text
from saescope.features.run import FeatureRun


def features_by_explanation(run: FeatureRun, query: str, n: int = 15, explainer: str | None = None) -> pd.DataFrame:
    """Explanations ranked by all-MiniLM-L6-v2 cosine similarity to ``query``, most similar first.

    Example::

        features_by_explanation(run, "female pronouns").head()
    """
    check_text(query, "search text")
    table = read_explanations(run)
    table = table[table.explanation.fillna("").str.len() > 0]
    if explainer is not None:
        table = table[table.explainer == explainer]
    if table.empty:
        raise SaescopeError(f"{run.path} has no explanations: run `saescope explain {run.path}` first")
    embedded = sentence_embeddings([query, *table.explanation])
    table = table.assign(similarity=(embedded[1:] @ embedded[0]).numpy())
    best = table.sort_values("similarity", ascending=False).head(n)
    return best[["feature", "similarity", "explainer", "model", "explanation"]].reset_index(drop=True)
