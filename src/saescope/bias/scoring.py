"""Batched likelihood queries for the bias benchmarks: next-token probabilities and sentence log-likelihoods.

Decisions:
- Next-token queries (occupations, definitional gender, agreement) tokenize the prompt as is, with no
  special tokens, the way SmolLM2 reads plain text.
- Sentence log-likelihoods (WinoBias, CrowS-Pairs) are the sum of log p(token | earlier tokens) over
  every token of the sentence, conditioned on one document-start token (``<|endoftext|>`` when the
  vocabulary has it, else BOS, else EOS) so that a difference in the first word is scored too. This
  is the causal-LM stand-in for CrowS-Pairs' masked-LM pseudo-likelihood.
- Prompts are sorted by length before batching, so padding stays small; results come back in input order.
- Pronoun probability sums the tokenizer's single-token variants (" she"/" She", " he"/" He").
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.models import LoadedModel


def _batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def _encode(lm: LoadedModel, texts: list[str], prefix: list[int]) -> list[list[int]]:
    if any(not t.strip() for t in texts):
        raise SaescopeError("empty prompt in a benchmark")
    return [prefix + ids for ids in lm.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _pad_id(lm: LoadedModel) -> int:
    tok = lm.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


@torch.inference_mode()
def next_token_logprobs(lm: LoadedModel, prompts: list[str], token_ids: list[int] | Tensor,
                        batch_size: int = 64) -> Tensor:
    """``[len(prompts), len(token_ids)]`` log-probabilities of ``token_ids`` right after each prompt."""
    rows = _encode(lm, prompts, [])
    wanted = torch.as_tensor(token_ids, dtype=torch.long, device=lm.device)
    out = torch.empty(len(rows), len(wanted))
    for index in _batches([len(r) for r in rows], batch_size):
        ids, mask = _pad([rows[i] for i in index], _pad_id(lm), lm.device)
        logits = lm.model(input_ids=ids, attention_mask=mask).logits
        last = mask.sum(1) - 1
        final = logits[torch.arange(len(index), device=lm.device), last].float().log_softmax(-1)
        out[index] = final[:, wanted].cpu()
    return out


def document_start_id(lm: LoadedModel) -> int:
    """The token that starts a scored sentence (see the module docstring)."""
    tok = lm.tokenizer
    endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(endoftext, int) and endoftext != tok.unk_token_id:
        return endoftext
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start is None:
        raise SaescopeError(f"{lm.name}'s tokenizer has no BOS or EOS token to start a sentence with")
    return start


@torch.inference_mode()
def sentence_logprobs(lm: LoadedModel, texts: list[str], batch_size: int = 32) -> Tensor:
    """``[len(texts)]`` total log-likelihood of each sentence (every token scored)."""
    rows = _encode(lm, texts, [document_start_id(lm)])
    out = torch.empty(len(rows))
    for index in _batches([len(r) for r in rows], batch_size):
        ids, mask = _pad([rows[i] for i in index], _pad_id(lm), lm.device)
        logprobs = lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        token_lp = logprobs.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
        out[index] = token_lp.sum(1).cpu()
    return out


def pronoun_ids(lm: LoadedModel, female: tuple[str, ...] = (" she", " She"),
                male: tuple[str, ...] = (" he", " He")) -> tuple[list[int], list[int]]:
    """Single-token ids of the female and the male pronoun variants."""
    def single(words: tuple[str, ...]) -> list[int]:
        ids = [lm.tokenizer.encode(w, add_special_tokens=False) for w in words]
        return [i[0] for i in ids if len(i) == 1]

    she, he = single(female), single(male)
    if not she or not he:
        raise SaescopeError(f"{lm.name}'s tokenizer has no single-token pronouns among {female + male}")
    return she, he


def p_she(lm: LoadedModel, prompts: list[str], batch_size: int = 64) -> Tensor:
    """``P(she) / (P(she) + P(he))`` at the next position of each prompt, summed over variants."""
    she, he = pronoun_ids(lm)
    lp = next_token_logprobs(lm, prompts, she + he, batch_size)
    female = lp[:, :len(she)].logsumexp(-1)
    male = lp[:, len(she):].logsumexp(-1)
    return torch.sigmoid(female - male)
