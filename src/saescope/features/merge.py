"""Merging feature accumulators computed on separate shards of the windows (``torchrun`` ranks).

The merge is exact: moments, counts and histograms add; maxima take the maximum; each feature's top-K
examples are the best K of the union ordered by (activation desc, window, position) - the order a
single accumulator keeps (on a tie it keeps the example seen first, i.e. the earlier window); each
feature's top tokens are the best of the union after taking every token's largest activation (a tie
at the table's edge is broken by token id, where one process keeps the token seen first).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_ADDED = ("n_tokens", "moments", "count", "hist")
_TOP_EXAMPLE_KEYS = ("top_values", "top_source", "top_location", "top_context_ids", "top_context_acts")


def merge_states(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """One accumulator state (``FeatureAccumulator.state``) holding everything ``states`` hold."""
    if len(states) == 1:
        return {k: v.clone() for k, v in states[0].items()}
    merged = {key: torch.stack([s[key] for s in states]).sum(0) for key in _ADDED}
    merged["max"] = torch.stack([s["max"] for s in states]).amax(0)
    merged |= _merge_top_examples(states)
    merged |= _merge_top_tokens(states)
    return merged


def _merge_top_examples(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    top_k = states[0]["top_values"].shape[1]
    union = {key: torch.cat([s[key] for s in states], dim=1) for key in _TOP_EXAMPLE_KEYS}
    values, location = union["top_values"].double(), union["top_location"]
    # activation descending, then window and position ascending; empty slots (-inf) last
    span = int(location[..., 1].max().clamp_min(0)) + 1
    run_order = torch.argsort(location[..., 0] * span + location[..., 1], dim=1, stable=True)
    by_value = torch.where(torch.isfinite(values), -values, torch.full_like(values, math.inf)).gather(1, run_order)
    order = run_order.gather(1, torch.argsort(by_value, dim=1, stable=True))
    keep = order[:, :top_k]
    out = {}
    for key, tensor in union.items():
        index = keep.view(*keep.shape, *([1] * (tensor.dim() - 2))).expand(-1, -1, *tensor.shape[2:])
        out[key] = tensor.gather(1, index).contiguous()
    return out


def _merge_top_tokens(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    slots = states[0]["top_token_ids"].shape[1]
    ids = torch.cat([s["top_token_ids"] for s in states], dim=1)         # [d_sae, R*slots], -1 empty
    best = torch.cat([s["top_token_max"] for s in states], dim=1)
    best = torch.where(ids >= 0, best, torch.full_like(best, -math.inf))
    # a token seen by several ranks: keep its largest activation once
    by_token = torch.argsort(ids, dim=1, stable=True)
    ids, best = ids.gather(1, by_token), best.gather(1, by_token)
    by_value = torch.argsort(-best.double(), dim=1, stable=True)
    ids_v, best_v = ids.gather(1, by_value), best.gather(1, by_value)
    seen = torch.zeros_like(ids_v, dtype=torch.bool)
    sorted_ids, first = torch.sort(ids_v, dim=1, stable=True)
    duplicate = torch.zeros_like(sorted_ids, dtype=torch.bool)
    duplicate[:, 1:] = (sorted_ids[:, 1:] == sorted_ids[:, :-1]) & (sorted_ids[:, 1:] >= 0)
    seen.scatter_(1, first, duplicate)
    best_v = torch.where(seen | (ids_v < 0), torch.full_like(best_v, -math.inf), best_v)
    ids_v = torch.where(seen, torch.full_like(ids_v, -1), ids_v)
    final = torch.argsort(-best_v.double(), dim=1, stable=True)[:, :slots]
    return {"top_token_ids": ids_v.gather(1, final).contiguous(), "top_token_max": best_v.gather(1, final).contiguous()}
