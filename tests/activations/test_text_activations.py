"""The one door from texts to activations, on a tiny random model and a tokenizer that adds a BOS token
by itself (as Llama's does): the policy never lets it, and every reading equals the unbatched forward."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_model
from saescope.activations.read import sink_mask
from saescope.activations.text import text_activations
from saescope.errors import SaescopeError
from saescope.model.hooks import forward_until
from saescope.model.loading import LoadedModel

HOOK = "blocks.1.hook_resid_post"


class BosTokenizer:
    """Characters as tokens (ids 3..127); adds BOS (1) unless told not to, like a Llama tokenizer."""

    bos_token_id, eos_token_id, pad_token_id, unk_token_id = 1, 2, 0, 0

    def __call__(self, texts, add_special_tokens=True):
        ids = [[3 + ord(c) % 120 for c in text] for text in texts]
        return {"input_ids": [[self.bos_token_id, *row] if add_special_tokens else row for row in ids]}

    def convert_tokens_to_ids(self, token):
        return self.unk_token_id


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return LoadedModel(tiny_model("gpt2"), tokenizer=BosTokenizer(), name="gpt2-tiny")


TEXTS = ["a cat", "the nurse said", "x", "hello there friend"]


def _alone(lm, text: str, start: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([lm.encode(text, start=start)])
    acts = forward_until(lm.model, [HOOK], ids)[HOOK].float()
    return acts[0], ~sink_mask(acts)[0]


def test_the_policy_never_adds_the_tokenizers_bos(lm):
    assert lm.encode("ab") == [3 + ord("a") % 120, 3 + ord("b") % 120]
    assert lm.encode(["ab"], start=True) == [[1, *lm.encode("ab")]] and lm.start_id == 1
    batch = lm.tokenize(["ab", "abc"])
    assert batch["input_ids"].tolist()[0] == [*lm.encode("ab"), 0] and batch["attention_mask"].sum().item() == 5


def test_every_reading_equals_the_unbatched_forward(lm):
    last = text_activations(lm, HOOK, TEXTS[:2] + TEXTS[3:], read="last", batch_size=2)
    mean = text_activations(lm, HOOK, TEXTS, read="mean", batch_size=3, start=True)
    tokens = text_activations(lm, [HOOK], TEXTS, read="tokens", batch_size=2)[HOOK]
    second = text_activations(lm, HOOK, TEXTS, read=[1, 2, 1, -2], start=True)
    assert last.shape == (3, 32) and mean.shape == (4, 32) and len(tokens) == 4
    for i, text in enumerate(TEXTS):
        acts, keep = _alone(lm, text)
        if text != "x":
            torch.testing.assert_close(last[[0, 1, None, 2][i]], acts[-1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tokens[i][0], acts, rtol=1e-5, atol=1e-5)
        assert torch.equal(tokens[i][1], keep)
        started, kept = _alone(lm, text, start=True)
        torch.testing.assert_close(second[i], started[[1, 2, 1, len(started) - 2][i]], rtol=1e-5, atol=1e-5)
        kept[0] = False  # the start token is never read
        expected = started[kept].mean(0) if kept.any() else torch.zeros(32)
        torch.testing.assert_close(mean[i], expected, rtol=1e-5, atol=1e-5)


def test_bad_reads_are_one_line_errors(lm):
    with pytest.raises(SaescopeError, match="unknown read 'first'"):
        text_activations(lm, HOOK, TEXTS, read="first")
    with pytest.raises(SaescopeError, match="2 positions for 4 texts"):
        text_activations(lm, HOOK, TEXTS, read=[0, 1])
    with pytest.raises(SaescopeError, match="outside its text"):
        text_activations(lm, HOOK, TEXTS, read=[0, 0, 5, 0])
    with pytest.raises(SaescopeError, match="attention sink .position 0 of text 2"):
        text_activations(lm, HOOK, TEXTS, read="last")  # "x" is one token: without a start token it is the sink
    assert text_activations(lm, HOOK, TEXTS, read="last", start=True).shape == (4, 32)
    with pytest.raises(SaescopeError, match="empty prompt"):
        text_activations(lm, HOOK, ["fine", " "])
