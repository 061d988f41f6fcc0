"""Find features by what their explanation says (``saescope features search RUN --explanation "gender"``).

The explanations' embeddings (all-MiniLM-L6-v2) are computed once per set of explanations and kept in
``RUN/explanation_embeddings.safetensors``, with a digest of the texts. A query then embeds only itself,
and a new ``explain`` run (other texts, another digest) makes the next query compute them again.
"""

from __future__ import annotations

import hashlib

import pandas as pd
from torch import Tensor

from saescope.autointerp.explain import read_explanations
from saescope.embeddings import sentence_embeddings
from saescope.errors import SaescopeError, check_text
from saescope.features.run import FeatureRun
from saescope.storage import atomic_path

CACHE_FILE = "explanation_embeddings.safetensors"


def explanation_embeddings(run: FeatureRun, texts: list[str]) -> Tensor:
    """``[len(texts), 384]`` embeddings of ``texts``, read from the RUN's cache when it holds these very texts,
    else computed and written there (atomically; a damaged cache is computed again)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
    path = run.path / CACHE_FILE
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as cached:
                if (cached.metadata() or {}).get("digest") == digest:
                    return cached.get_tensor("embeddings")
        except Exception:  # noqa: BLE001 - safetensors raises several types for damaged files: compute again
            pass
    embedded = sentence_embeddings(texts)
    with atomic_path(path) as tmp:
        save_file({"embeddings": embedded.contiguous()}, str(tmp), metadata={"digest": digest, "model": "all-MiniLM-L6-v2"})
    return embedded


def features_by_explanation(run: FeatureRun, query: str, n: int = 15, explainer: str | None = None) -> pd.DataFrame:
    """Explanations ranked by all-MiniLM-L6-v2 cosine similarity to ``query``, most similar first.

    Example::

        features_by_explanation(run, "female pronouns").head()
    """
    check_text(query, "search text")
    table = read_explanations(run)
    table = table[table.explanation.fillna("").str.len() > 0].reset_index(drop=True)
    if table.empty:
        raise SaescopeError(f"{run.path} has no explanations: run `saescope explain {run.path}` first")
    embedded = explanation_embeddings(run, list(table.explanation))
    table = table.assign(similarity=(embedded @ sentence_embeddings([query])[0]).numpy())
    if explainer is not None:
        table = table[table.explainer == explainer]
        if table.empty:
            raise SaescopeError(f"{run.path} has no explanations by explainer {explainer!r}")
    best = table.sort_values("similarity", ascending=False).head(n)
    return best[["feature", "similarity", "explainer", "model", "explanation"]].reset_index(drop=True)
