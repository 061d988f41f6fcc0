"""Likelihoods under a causal LM: next-token log-probs, sentence log-likelihoods, CE loss and KL.

Shared by SAE evaluation, steering sweeps, contrast evaluation, the bias benchmarks, and (next)
circuits and ROME metrics. Decisions:
- Next-token queries tokenize the prompt as is, with no special tokens, the way SmolLM2 reads text.
- Sentence log-likelihoods sum log p(token | earlier tokens) over every token of the sentence,
  conditioned on one document-start token (``<|endoftext|>`` when the vocabulary has it, else BOS,
  else EOS) so that a difference in the first word is scored too.
- Prompts are sorted by length before batching, so padding stays small; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel, pad_rows


def next_token_logprobs_of(logits: Tensor) -> Tensor:
    """Log-softmax of the predictions for positions 1.. (``logits[:, :-1]``) in float32.

    Row by row into one output: on a CPU this is ~2x faster than one call over a [batch, seq, vocab]
    tensor, whose temporaries are too big for the caches and are page-faulted in afresh each time."""
    out = torch.empty((*logits.shape[:-2], logits.shape[-2] - 1, logits.shape[-1]), device=logits.device)
    for row in range(logits.shape[0]):
        torch.log_softmax(logits[row, :-1].float(), -1, out=out[row])
    return out


def summed_ce(logp: Tensor, ids: Tensor) -> float:
    """Summed next-token cross-entropy of ``ids[:, 1:]`` under ``logp`` (from ``next_token_logprobs_of``)."""
    return float(-logp.gather(-1, ids[:, 1:, None]).sum())


def summed_kl(clean_logp: Tensor, logp: Tensor) -> float:
    """Summed KL(clean || other) over every predicted position (row by row, see ``next_token_logprobs_of``)."""
    return sum(float((clean.exp() * (clean - other)).sum()) for clean, other in zip(clean_logp, logp))


def length_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (shortest first)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def encode_texts(lm: LoadedModel, texts: list[str], prefix: list[int] | None = None) -> list[list[int]]:
    """Token ids of each text (no special tokens), after ``prefix`` and the model's ``instruction`` (when
    one is set: the prompting baseline, ``steering.prompt``). Empty texts are refused. Every scored or
    read text goes through here (next-token queries, sentence scores, ``text_activations``); token
    lookups (``lm.encode(" she")``) do not."""
    if any(not t.strip() for t in texts):
        raise SaescopeError("empty prompt: every text must hold some characters")
    lead = lm.encode(lm.instruction) if lm.instruction else []
    return [(prefix or []) + lead + ids for ids in lm.encode(list(texts))]


def pad_id(lm: LoadedModel) -> int:
    """``lm.pad_id``."""
    return lm.pad_id


@torch.inference_mode()
def next_token_logprobs(lm: LoadedModel, prompts: list[str], token_ids: list[int] | Tensor,
                        batch_size: int = 64) -> Tensor:
    """``[len(prompts), len(token_ids)]`` log-probabilities of ``token_ids`` right after each prompt.

    Example::

        lp = next_token_logprobs(lm, ["The nurse said that"], [she_id, he_id])
    """
    rows = encode_texts(lm, prompts)
    wanted = torch.as_tensor(token_ids, dtype=torch.long, device=lm.device)
    out = torch.empty(len(rows), len(wanted))
    for index in length_batches([len(r) for r in rows], batch_size):
        ids, mask = pad_rows([rows[i] for i in index], pad_id(lm), lm.device)
        out[index] = last_token_logits(lm, ids, mask).log_softmax(-1)[:, wanted].cpu()
    return out


def last_token_logits(lm: LoadedModel, ids: Tensor, mask: Tensor) -> Tensor:
    """``[batch, vocab]`` float32 logits at each row's last real token (right padding)."""
    return logits_at(lm, ids, mask, torch.arange(len(ids), device=ids.device), mask.sum(1) - 1)


def logits_at(lm: LoadedModel, ids: Tensor, mask: Tensor, rows: Tensor, positions: Tensor,
              position_ids: Tensor | None = None) -> Tensor:
    """``[n, vocab]`` float32 logits at ``(rows[i], positions[i])`` only. ``mask`` is a 2D padding mask
    or a custom 4D one (then pass ``position_ids`` too, see ``model.shared_prefix``).

    Runs the base model and applies the LM head to those positions alone (on short prompts the head
    is ~25 % of the embedded model's compute); models without a separate base model take the full forward."""
    hidden = final_hidden(lm, ids, mask, position_ids)
    if hidden is None:
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[rows, positions].float()
    return head_logits(lm, hidden[rows, positions])


def final_hidden(lm: LoadedModel, ids: Tensor, mask: Tensor | None = None,
                 position_ids: Tensor | None = None) -> Tensor | None:
    """``[batch, seq, d]`` the base model's last hidden states (after the final norm: what the LM head
    reads), or ``None`` for a model without a separate base model and output embeddings."""
    base, head = getattr(lm.model, "base_model", None), lm.model.get_output_embeddings()
    if base is None or base is lm.model or head is None:
        return None
    return base(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).last_hidden_state


def head_logits(lm: LoadedModel, hidden: Tensor) -> Tensor:
    """float32 logits of the LM head on ``hidden`` (from ``final_hidden``), with Gemma's final logit
    soft-capping when the config has one."""
    logits = lm.model.get_output_embeddings()(hidden).float()
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def document_start_id(lm: LoadedModel) -> int:
    """The token that starts a scored sentence (see the module docstring): ``lm.start_id``."""
    return lm.start_id


@torch.inference_mode()
def sentence_logprobs(lm: LoadedModel, texts: list[str], batch_size: int = 32) -> Tensor:
    """``[len(texts)]`` total log-likelihood of each sentence (every token scored).

    Example::

        sentence_logprobs(lm, ["The cat sat.", "Cat the sat."])   # the first is higher
    """
    rows = encode_texts(lm, texts, [document_start_id(lm)])
    return span_logprobs(lm, rows, [1] * len(rows), batch_size)


@torch.inference_mode()
def span_logprobs(lm: LoadedModel, rows: list[list[int]], starts: list[int], batch_size: int = 32) -> Tensor:
    """``[len(rows)]``: for each token id list, the sum of log p(token t | tokens before t) over
    t = ``starts[i]`` .. the end (``starts[i] >= 1``). The LM head runs only at those positions, so
    scoring a shared prefix's tokens costs nothing beyond the forward pass."""
    if any(not 1 <= start <= len(row) for row, start in zip(rows, starts)):
        raise SaescopeError("every scored span must start after the first token and inside its row")
    out = torch.empty(len(rows))
    for index in length_batches([len(r) for r in rows], batch_size):
        ids, mask = pad_rows([rows[i] for i in index], pad_id(lm), lm.device)
        lengths = mask.sum(1, keepdim=True)  # [b, 1]
        first = torch.tensor([starts[i] for i in index], device=lm.device)[:, None] - 1
        position = torch.arange(ids.shape[1], device=lm.device)[None]
        row, pos = ((position >= first) & (position < lengths - 1)).nonzero(as_tuple=True)  # predicting pos + 1
        logits = logits_at(lm, ids, mask, row, pos)  # [n, vocab]
        token_lp = logits.log_softmax(-1).gather(-1, ids[row, pos + 1][:, None])[:, 0]
        out[index] = torch.zeros(len(index), device=lm.device).index_add_(0, row, token_lp).cpu()
    return out


@torch.inference_mode()
def continuation_logprob(lm: LoadedModel, prompt: list[int], continuation: list[int]) -> float:
    """log P(continuation | prompt) for token id lists (the prompt must not be empty)."""
    ids = torch.tensor([prompt + continuation], device=lm.device)
    logits = lm.model(ids).logits[0, len(prompt) - 1:-1].float()
    return float(F.log_softmax(logits, -1).gather(-1, ids[0, len(prompt):, None]).sum())


@torch.inference_mode()
def ce_and_kl(lm: LoadedModel, ids: Tensor, clean_logp: Tensor | None = None) -> tuple[float, float, Tensor]:
    """Mean next-token CE of ``ids`` [batch, seq] under the model as it is now, the mean per-token KL
    from ``clean_logp`` (0 without it), and this pass's log-probs (to use as the next ``clean_logp``)."""
    logp = next_token_logprobs_of(lm.model(input_ids=ids).logits)
    n = ids[:, 1:].numel()
    kl = summed_kl(clean_logp, logp) / n if clean_logp is not None else 0.0
    return summed_ce(logp, ids) / n, kl, logp
