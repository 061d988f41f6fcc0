"""Streaming per-feature statistics over a corpus, in fixed memory, vectorized over all features.

One ``update`` per batch of SAE activations; nothing is stored per token. Kept:
- raw moments Σa, Σa², Σa³, Σa⁴ (float64) over all tokens -> mean, std, skewness, kurtosis with the
  definitions of ``numpy.std`` (ddof 0), ``scipy.stats.skew`` and ``scipy.stats.kurtosis`` (biased,
  Fisher); firing count, max, a histogram of the non-zero activations on fixed log-spaced bins;
- the top-K activating tokens of every feature with their context window (token ids and the
  feature's activation at every context token), document index and position;
- the top tokens (distinct vocabulary ids) of every feature by their largest activation; the table
  is pruned to ``top_tokens`` per feature after every batch, which keeps the top exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEAD_LOG10_DENSITY = -10.0  # log10_density of a feature that never fires (as SAELens/Neuronpedia)
HIST_EDGES = torch.logspace(-3, 4, 57, dtype=torch.float64)  # 56 bins, 1e-3 .. 1e4 (values clamp in)


class FeatureAccumulator:
    """Accumulates statistics for ``d_sae`` features; ``state_dict``/``load_state_dict`` for resuming.

    Example::

        acc = FeatureAccumulator(d_sae=4608, vocab_size=49152)
        acc.update(feats, ids, sources, keep)      # feats [batch, seq, d_sae], ids/keep [batch, seq]
        acc.stats()["mean"]                        # [d_sae] float64
    """

    def __init__(self, d_sae: int, vocab_size: int, top_k: int = 20, context_left: int = 24,
                 context_right: int = 8, top_tokens: int = 32) -> None:
        self.d_sae, self.vocab_size, self.top_k = d_sae, vocab_size, top_k
        self.offsets = torch.arange(-context_left, context_right + 1)  # [C]
        self.max_top_tokens = top_tokens
        width = len(self.offsets)
        self.state: dict[str, Tensor] = {
            "n_tokens": torch.zeros((), dtype=torch.int64),
            "moments": torch.zeros(4, d_sae, dtype=torch.float64),
            "count": torch.zeros(d_sae, dtype=torch.int64),
            "max": torch.zeros(d_sae),
            "hist": torch.zeros(d_sae, len(HIST_EDGES) - 1, dtype=torch.int64),
            "top_values": torch.full((d_sae, top_k), -math.inf),
            "top_source": torch.full((d_sae, top_k, 2), -1, dtype=torch.int64),  # (doc index, position)
            "top_location": torch.full((d_sae, top_k, 2), -1, dtype=torch.int64),  # (window, position)
            "top_context_ids": torch.full((d_sae, top_k, width), -1, dtype=torch.int64),
            "top_context_acts": torch.zeros(d_sae, top_k, width),
            "token_keys": torch.zeros(0, dtype=torch.int64),  # feature * vocab + token id
            "token_max": torch.zeros(0),
        }

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.contiguous() for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.state = {k: state[k].clone() for k in self.state}

    @torch.no_grad()
    def update(self, feats: Tensor, ids: Tensor, sources: Tensor, keep: Tensor, first_window: int) -> None:
        """Add a batch: ``feats`` [B, T, d_sae], ``ids`` [B, T], ``sources`` [B, T, 2], ``keep`` [B, T]
        (False at attention sinks: not counted, never an example); windows are numbered from
        ``first_window``."""
        feats = feats.float().cpu() * keep.cpu()[..., None]
        ids, sources, keep = ids.cpu(), sources.cpu(), keep.cpu()
        kept = feats[keep]  # [n, d_sae]
        rows, cols = (kept > 0).nonzero(as_tuple=True)
        values = kept[rows, cols]
        self._update_moments(kept, cols, values)
        self._update_top_examples(feats, ids, sources, first_window)
        self._update_top_tokens(ids[keep][rows], cols, values)

    def _update_moments(self, kept: Tensor, cols: Tensor, values: Tensor) -> None:
        s = self.state
        s["n_tokens"] += len(kept)
        v64 = values.double()
        power = torch.ones_like(v64)
        for p in range(4):
            power = power * v64
            s["moments"][p].index_add_(0, cols, power)
        s["count"] += torch.bincount(cols, minlength=self.d_sae)
        if len(kept):
            s["max"] = torch.maximum(s["max"], kept.max(0).values)
        n_bins = s["hist"].shape[1]
        bins = (torch.bucketize(v64, HIST_EDGES) - 1).clamp(0, n_bins - 1)
        s["hist"].view(-1).index_add_(0, cols * n_bins + bins, torch.ones_like(cols))

    def _update_top_examples(self, feats: Tensor, ids: Tensor, sources: Tensor, first_window: int) -> None:
        s = self.state
        batch, seq, d_sae = feats.shape
        flat = feats.reshape(batch * seq, d_sae)
        k = min(self.top_k, batch * seq)
        cand_values, cand_pos = flat.topk(k, dim=0)  # [k, d_sae]
        cand_values, cand_pos = cand_values.T, cand_pos.T  # [d_sae, k]
        cand_values = cand_values.masked_fill(cand_values <= 0, -math.inf)
        b, t = cand_pos // seq, cand_pos % seq
        ctx_t = t[..., None] + self.offsets  # [d_sae, k, C]
        valid = (ctx_t >= 0) & (ctx_t < seq)
        ctx_flat = b[..., None] * seq + ctx_t.clamp(0, seq - 1)
        feature = torch.arange(d_sae)[:, None, None]
        candidates = {
            "top_values": cand_values,
            "top_source": sources.reshape(-1, 2)[cand_pos],
            "top_location": torch.stack([b + first_window, t], -1),
            "top_context_ids": ids.reshape(-1)[ctx_flat].masked_fill(~valid, -1),
            "top_context_acts": flat.reshape(-1)[ctx_flat * d_sae + feature].masked_fill(~valid, 0.0),
        }
        merged = torch.cat([s["top_values"], cand_values], 1)
        order = merged.topk(self.top_k, dim=1).indices  # [d_sae, K]
        for key, cand in candidates.items():
            both = torch.cat([s[key], cand], 1)
            index = order.view(*order.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
            s[key] = both.gather(1, index)

    def _update_top_tokens(self, token_ids: Tensor, cols: Tensor, values: Tensor) -> None:
        s = self.state
        keys = torch.cat([s["token_keys"], cols * self.vocab_size + token_ids])
        maxes = torch.cat([s["token_max"], values])
        unique, inverse = torch.unique(keys, return_inverse=True)
        new_max = torch.zeros(len(unique)).scatter_reduce_(0, inverse, maxes, "amax", include_self=False)
        # keep the best `max_top_tokens` per feature: sort by max desc, then stably by feature
        order = new_max.argsort(descending=True)
        order = order[(unique[order] // self.vocab_size).argsort(stable=True)]
        feature = unique[order] // self.vocab_size
        first_of_feature = torch.searchsorted(feature, feature, right=False)
        rank = torch.arange(len(order)) - first_of_feature
        chosen = order[rank < self.max_top_tokens]
        s["token_keys"], s["token_max"] = unique[chosen], new_max[chosen]

    def stats(self) -> dict[str, Tensor]:
        """Per-feature statistics (float64): count, density, log10_density, mean, std, skewness,
        kurtosis, max. Features that never fire have skewness/kurtosis NaN (as scipy on a constant)."""
        s = self.state
        n = float(s["n_tokens"])
        raw = s["moments"] / max(n, 1.0)  # E[a], E[a²], E[a³], E[a⁴]
        mean = raw[0]
        m2 = (raw[1] - mean**2).clamp_min(0.0)
        m3 = raw[2] - 3 * mean * raw[1] + 2 * mean**3
        m4 = raw[3] - 4 * mean * raw[2] + 6 * mean**2 * raw[1] - 3 * mean**4
        density = s["count"].double() / max(n, 1.0)
        log10_density = torch.where(s["count"] > 0, density.clamp_min(1e-300).log10(),
                                    torch.full_like(density, DEAD_LOG10_DENSITY))
        return {"count": s["count"], "density": density, "log10_density": log10_density, "mean": mean,
                "std": m2.sqrt(), "skewness": m3 / m2**1.5, "kurtosis": m4 / m2**2 - 3.0,
                "max": s["max"].double()}

    def top_tokens(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(feature, token id, max activation)`` rows, best first within each feature."""
        s = self.state
        feature, token = s["token_keys"] // self.vocab_size, s["token_keys"] % self.vocab_size
        order = s["token_max"].argsort(descending=True)
        order = order[feature[order].argsort(stable=True)]
        return feature[order], token[order], s["token_max"][order]
