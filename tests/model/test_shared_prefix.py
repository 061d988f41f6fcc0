"""Twins packed in one row (shared prefix run once) score exactly as separate sentences."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from helpers import tiny_model
from saescope.model import shared_prefix
from saescope.model.likelihood import document_start_id, encode_texts, span_logprobs
from saescope.model.loading import LoadedModel
from saescope.model.shared_prefix import common_prefix, packing_supported, twin_span_logprobs
from saescope.steering import Interventions, VectorSteering


def _separately(lm, a_rows, b_rows):
    shared = [max(1, common_prefix(a, b)) for a, b in zip(a_rows, b_rows)]
    scores = span_logprobs(lm, a_rows + b_rows, shared + shared, 4)
    return scores[:len(a_rows)], scores[len(a_rows):]


def test_packed_twins_score_like_separate_sentences(lm):
    pairs = [("The doctor said that he was tired.", "The doctor said that she was tired."),
             ("He cooked.", "She cooked dinner for everyone at the party."),  # differ at the first word
             ("The nurse smiled.", "The nurse smiled."),  # identical: a gap of exactly 0
             ("The pilot", "The pilot flew home")]  # one a prefix of the other
    start = [document_start_id(lm)]
    a_rows = encode_texts(lm, [a for a, _ in pairs], start)
    b_rows = encode_texts(lm, [b for _, b in pairs], start)
    assert packing_supported(lm)
    packed = twin_span_logprobs(lm, a_rows, b_rows, batch_size=3)
    expected = _separately(lm, a_rows, b_rows)
    for got, want in zip(packed, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert packed[0][2] == packed[1][2]
    assert packed[0][3] == 0.0 and packed[1][3] < 0  # "The pilot" has nothing after the shared part


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "qwen2"])
def test_packing_on_other_families(family):
    lm = LoadedModel(tiny_model(family), tokenizer=SimpleNamespace(pad_token_id=0, eos_token_id=0), name=family)
    a_rows = [[0, 5, 6, 7, 8, 9], [0, 3, 4], [0, 11, 12, 13]]
    b_rows = [[0, 5, 6, 20, 21], [0, 30, 31, 32, 33], [0, 11, 12, 13, 40]]
    packed = twin_span_logprobs(lm, a_rows, b_rows, batch_size=2)
    for got, want in zip(packed, _separately(lm, a_rows, b_rows)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_unsupported_models_fall_back_to_separate_rows(lm, monkeypatch):
    monkeypatch.setitem(shared_prefix._SUPPORTED, lm.model, False)
    called = []
    monkeypatch.setattr(shared_prefix, "_packed_scores", lambda *a: called.append(1))
    rows = encode_texts(lm, ["He ran.", "She ran."], [document_start_id(lm)])
    a, b = twin_span_logprobs(lm, rows[:1], rows[1:])
    assert not called and torch.isfinite(a).all() and a.shape == b.shape == (1,)


def test_interventions_on_chosen_positions_are_not_position_wise(lm):
    everywhere = VectorSteering("blocks.3.hook_resid_post", torch.ones(lm.d_model), 1.0)
    first_tokens = VectorSteering("blocks.3.hook_resid_post", torch.ones(lm.d_model), 1.0, positions=[0, 1])
    assert everywhere.position_wise and not first_tokens.position_wise
    assert not Interventions([everywhere, first_tokens]).position_wise and Interventions([everywhere]).position_wise
