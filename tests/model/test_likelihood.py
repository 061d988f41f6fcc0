"""Likelihood queries: the last-token shortcut equals the full forward, batching does not change
results, and CE/KL agree with their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_model
from saescope.model.likelihood import (
    ce_and_kl,
    continuation_logprob,
    document_start_id,
    last_token_logits,
    next_token_logprobs,
    sentence_logprobs,
    span_logprobs,
)
from saescope.model.loading import LoadedModel, pad_rows


def test_last_token_logits_equal_the_full_forward(lm):
    rows = [lm.tokenizer.encode(t, add_special_tokens=False) for t in ("The nurse said that", "Hi", "A b c d e f")]
    ids, mask = pad_rows(rows, lm.tokenizer.eos_token_id, lm.device)
    full = lm.model(input_ids=ids, attention_mask=mask).logits
    expected = full[torch.arange(3), mask.sum(1) - 1].float()
    torch.testing.assert_close(last_token_logits(lm, ids, mask), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "gpt_neox"])
def test_last_token_logits_on_other_families(family):
    model = tiny_model(family)
    if family == "gemma2":
        model.config.final_logit_softcapping = 5.0
    lm = LoadedModel(model, tokenizer=None, name=family)
    ids = torch.randint(0, 128, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    full = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(last_token_logits(lm, ids, mask), full[torch.arange(2), torch.tensor([6, 4])].float(),
                               rtol=1e-4, atol=1e-5)


def test_batching_does_not_change_next_token_logprobs(lm):
    prompts = ["The nurse said that", "The engineer went home because", "Yes", "After a long day, the pilot said"]
    together = next_token_logprobs(lm, prompts, [1, 2, 3], batch_size=4)
    alone = torch.cat([next_token_logprobs(lm, [p], [1, 2, 3], batch_size=1) for p in prompts])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_sentence_and_continuation_logprobs_agree(lm):
    text = "The cat sat on the mat."
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    start = document_start_id(lm)
    assert sentence_logprobs(lm, [text])[0].item() == pytest.approx(continuation_logprob(lm, [start], ids), abs=1e-3)
    assert sentence_logprobs(lm, [text])[0] > sentence_logprobs(lm, ["Mat the on sat cat the."])[0]


def test_ce_and_kl_match_their_definitions(lm):
    ids = torch.tensor([lm.tokenizer.encode("The cat sat on the mat and looked out of the window.")])
    ce, kl, logp = ce_and_kl(lm, ids)
    logits = lm.model(ids).logits[0, :-1].float()
    assert ce == pytest.approx(float(F.cross_entropy(logits, ids[0, 1:])), rel=1e-5) and kl == 0.0
    _, kl_same, _ = ce_and_kl(lm, ids, logp)
    assert kl_same == pytest.approx(0.0, abs=1e-6)


def test_a_span_scores_only_its_tokens(lm):
    rows = [lm.tokenizer.encode("The nurse said that she was tired.", add_special_tokens=False)]
    whole = span_logprobs(lm, rows, [1])[0]
    head, tail = span_logprobs(lm, rows * 2, [1, 4])
    assert tail > whole and whole.item() == pytest.approx(head.item(), abs=1e-4)
    prefix_only = continuation_logprob(lm, rows[0][:1], rows[0][1:4])
    assert (whole - tail).item() == pytest.approx(prefix_only, abs=1e-3)
