"""Search by explanation: the explanations are embedded once and cached in the RUN, a query embeds itself only,
and new explanations make the cache be computed again."""

from __future__ import annotations

import shutil

import pytest

import saescope.autointerp.search as search
from saescope.autointerp.explain import explain_features
from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun


def test_explanation_embeddings_are_computed_once_per_set_of_explanations(run, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(run.path, folder)
    copy = FeatureRun.load(folder)
    explain_features(copy, list(range(12)), None, progress=False)
    table = search.read_explanations(copy)
    words = table[table.feature == 5].explanation.iloc[0]
    first = search.features_by_explanation(copy, words)
    assert first.feature.iloc[0] == 5 and first.similarity.iloc[0] > 0.99
    assert (folder / search.CACHE_FILE).is_file()
    calls: list[int] = []
    real = search.sentence_embeddings
    monkeypatch.setattr(search, "sentence_embeddings", lambda texts: calls.append(len(texts)) or real(texts))
    again = search.features_by_explanation(copy, words)
    assert calls == [1] and again.equals(first)  # only the query was embedded
    explain_features(copy, list(range(12, 16)), None, progress=False)  # new explanations: a new digest
    calls.clear()
    search.features_by_explanation(copy, words)
    assert calls == [len(search.read_explanations(copy).explanation.dropna().loc[lambda s: s.str.len() > 0]), 1]
    (folder / search.CACHE_FILE).write_bytes(b"damaged")
    assert search.features_by_explanation(copy, words).feature.iloc[0] == 5  # a damaged cache is rebuilt
    with pytest.raises(SaescopeError, match="no explanations by explainer 'llm'"):
        search.features_by_explanation(copy, words, explainer="llm")
