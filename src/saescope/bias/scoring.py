"""The pronoun read-out of the bias benchmarks: ``P(she) / (P(she) + P(he))`` at the next token.

Pronoun probability sums the tokenizer's single-token variants (" she"/" She", " he"/" He"). The
generic likelihood queries (next-token log-probs, sentence log-likelihoods) are in
``saescope.model.likelihood``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.likelihood import next_token_logprobs
from saescope.model.loading import LoadedModel


def pronoun_ids(lm: LoadedModel, female: tuple[str, ...] = (" she", " She"),
                male: tuple[str, ...] = (" he", " He")) -> tuple[list[int], list[int]]:
    """Single-token ids of the female and the male pronoun variants."""
    def single(words: tuple[str, ...]) -> list[int]:
        ids = [lm.encode(w) for w in words]
        return [i[0] for i in ids if len(i) == 1]

    she, he = single(female), single(male)
    if not she or not he:
        raise SaescopeError(f"{lm.name}'s tokenizer has no single-token pronouns among {female + male}")
    return she, he


def p_she(lm: LoadedModel, prompts: list[str], batch_size: int = 64) -> Tensor:
    """``P(she) / (P(she) + P(he))`` at the next position of each prompt, summed over variants.

    Example::

        p_she(lm, ["The nurse said that", "The pilot said that"])   # tensor([0.9, 0.2]) or so
    """
    she, he = pronoun_ids(lm)
    lp = next_token_logprobs(lm, prompts, she + he, batch_size)
    female = lp[:, :len(she)].logsumexp(-1)
    male = lp[:, len(she):].logsumexp(-1)
    return torch.sigmoid(female - male)
