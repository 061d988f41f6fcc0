"""Twin sentences scored in one row: their shared prefix runs once, each ending attends only to it.

Twin sentences (WinoBias pro/anti, CrowS-Pairs more/less) share their first tokens, often half of
them. ``twin_span_logprobs`` packs each pair as ``prefix + ending_a + ending_b`` in one row, with a
custom 4D attention mask (``ending_b`` sees the prefix and itself, never ``ending_a``) and position
ids that restart ``ending_b`` where the prefix ends. Every scored log-probability equals the one of
the unpacked sentence; the forward pass reads ~1/3 fewer tokens on WinoBias.

Packing needs a model that takes ``position_ids`` and a custom 4D mask (Llama, Mistral, Qwen, Gemma,
GPT-2, NeoX in 🤗 transformers; OPT derives positions from the mask and does not). Rather than trust a
list of families, the first call per model checks packed against unpacked scores on one pair and falls
back to unpacked rows when they differ (``packing_supported``). Hooks see packed rows: position-wise
interventions act exactly as on the unpacked sentences; one restricted to a list of positions would
not, so callers pass ``packed=False`` for those.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from saescope.model.likelihood import length_batches, logits_at, pad_id, span_logprobs
from saescope.model.loading import LoadedModel

_SUPPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def common_prefix(a: list[int], b: list[int]) -> int:
    """The number of leading tokens ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _pack(a: list[int], b: list[int], shared: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """``(ids, position ids, scored (index, target) pairs for a, for b)`` of one packed pair."""
    ids = a + b[shared:]
    positions = list(range(len(a))) + list(range(shared, len(b)))
    scored_a = [(j - 1, a[j]) for j in range(shared, len(a))]
    scored_b = [((shared - 1) if j == shared else len(a) + j - 1 - shared, b[j]) for j in range(shared, len(b))]
    return ids, positions, scored_a, scored_b


def _mask(lengths: list[int], ends_a: list[int], shared: list[int], width: int, dtype: torch.dtype,
          device: torch.device) -> Tensor:
    """``[batch, 1, width, width]`` additive mask: causal, ``ending_b`` blind to ``ending_a``; padded
    rows see only themselves (no all-masked row, so no NaN)."""
    index = torch.arange(width, device=device)
    allowed = (index[None, :] <= index[:, None]).repeat(len(lengths), 1, 1)  # [b, q, k]
    for row, (length, end_a, start) in enumerate(zip(lengths, ends_a, shared)):
        allowed[row, end_a:, start:end_a] = False
        allowed[row, length:, :] = False
        padding = torch.arange(length, width, device=device)
        allowed[row, padding, padding] = True
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def _packed_scores(lm: LoadedModel, rows_a: list[list[int]], rows_b: list[list[int]], shared: list[int],
                   batch_size: int) -> tuple[Tensor, Tensor]:
    packs = [_pack(a, b, s) for a, b, s in zip(rows_a, rows_b, shared)]
    out = torch.zeros(2, len(packs))
    for index in length_batches([len(p[0]) for p in packs], batch_size):
        chosen = [packs[i] for i in index]
        width = max(len(p[0]) for p in chosen)
        ids = torch.full((len(index), width), pad_id(lm), dtype=torch.long)
        pos = torch.zeros((len(index), width), dtype=torch.long)
        for row, (p_ids, p_pos, _, _) in enumerate(chosen):
            ids[row, :len(p_ids)], pos[row, :len(p_pos)] = torch.tensor(p_ids), torch.tensor(p_pos)
        mask = _mask([len(p[0]) for p in chosen], [len(rows_a[i]) for i in index], [shared[i] for i in index],
                     width, lm.dtype, lm.device)
        where = [(side, row, at, target) for row, pack in enumerate(chosen)
                 for side in (0, 1) for at, target in pack[2 + side]]
        if not where:
            continue
        side, row, at, target = (torch.tensor(column, device=lm.device) for column in zip(*where))
        logits = logits_at(lm, ids.to(lm.device), mask, row, at, position_ids=pos.to(lm.device))
        token_lp = logits.log_softmax(-1).gather(-1, target[:, None])[:, 0]
        flat = torch.zeros(2 * len(index), device=lm.device).index_add_(0, side * len(index) + row, token_lp)
        out[:, index] = flat.view(2, len(index)).cpu()
    return out[0], out[1]


def packing_supported(lm: LoadedModel) -> bool:
    """Whether packed scores equal unpacked ones on this model (checked once per model, on one pair)."""
    if lm.model not in _SUPPORTED:
        a, b = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 8]]
        with torch.inference_mode():
            packed = torch.stack(_packed_scores(lm, [a], [b], [3], 1))[:, 0]
            plain = span_logprobs(lm, [a, b], [3, 3], 2)
        _SUPPORTED[lm.model] = bool(torch.allclose(packed, plain, rtol=1e-3, atol=1e-3))
    return _SUPPORTED[lm.model]


@torch.inference_mode()
def twin_span_logprobs(lm: LoadedModel, rows_a: list[list[int]], rows_b: list[list[int]], batch_size: int = 32,
                       packed: bool = True) -> tuple[Tensor, Tensor]:
    """For each twin pair of token id lists (both starting with the same document-start token), the
    summed log-probability of each one's tokens from the first difference on: ``(scores_a, scores_b)``.
    The shared tokens would score the same on both sides, so the gap ``a - b`` is the whole sentences'.

    Example::

        a, b = twin_span_logprobs(lm, [ids_pro], [ids_anti]); gap = a - b
    """
    shared = [max(1, common_prefix(a, b)) for a, b in zip(rows_a, rows_b)]
    if packed and packing_supported(lm):
        return _packed_scores(lm, rows_a, rows_b, shared, batch_size)
    scores = span_logprobs(lm, rows_a + rows_b, shared + shared, batch_size)
    return scores[:len(rows_a)], scores[len(rows_a):]
