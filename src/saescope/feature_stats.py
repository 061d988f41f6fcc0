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
        self.prune_every = 500_000  # pending top-token entries before the table is pruned
        self._token_threshold = torch.full((d_sae,), -math.inf)  # M-th best max per feature (full tables)
        self._pending_tokens: list[tuple[Tensor, Tensor]] = []
        self._n_pending = 0
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
        self._prune_top_tokens()
        return {k: v.contiguous() for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.state = {k: state[k].clone() for k in self.state}

    @torch.no_grad()
    def update(self, feats: Tensor, ids: Tensor, sources: Tensor, keep: Tensor, first_window: int) -> None:
        """Add a batch of dense activations ``feats`` [B, T, d_sae]; ``ids`` [B, T], ``sources``
        [B, T, 2], ``keep`` [B, T] (False at attention sinks: not counted, never an example);
        windows are numbered from ``first_window``."""
        flat = feats.detach().float().cpu().reshape(-1, feats.shape[-1])  # [B*T, d_sae]
        rows, cols = flat.nonzero(as_tuple=True)
        self.update_sparse(rows, cols, flat[rows, cols], ids, sources, keep, first_window)

    @torch.no_grad()
    def update_sparse(self, rows: Tensor, cols: Tensor, values: Tensor, ids: Tensor, sources: Tensor,
                      keep: Tensor, first_window: int) -> None:
        """Add a batch given as non-zero entries: token row (into the flattened [B*T]), feature, value.

        For a TopK SAE this is its k (values, indices) per token, never made dense."""
        ids, sources, keep = ids.cpu(), sources.cpu(), keep.cpu()
        rows, cols, values = rows.cpu(), cols.cpu(), values.detach().float().cpu()
        live = (values > 0) & keep.reshape(-1)[rows]
        rows, cols, values = rows[live], cols[live], values[live]
        self._update_moments(int(keep.sum()), cols, values)
        self._update_top_examples(rows, cols, values, ids, sources, first_window)
        self._update_top_tokens(cols, ids.reshape(-1)[rows], values)

    def _update_moments(self, n_kept: int, cols: Tensor, values: Tensor) -> None:
        s = self.state
        s["n_tokens"] += n_kept
        v64 = values.double()
        power = torch.ones_like(v64)
        for p in range(4):
            power = power * v64
            s["moments"][p].index_add_(0, cols, power)
        s["count"] += torch.bincount(cols, minlength=self.d_sae)
        s["max"] = s["max"].scatter_reduce(0, cols, values, "amax")
        n_bins = s["hist"].shape[1]
        bins = (torch.bucketize(v64, HIST_EDGES) - 1).clamp(0, n_bins - 1)
        s["hist"].view(-1).index_add_(0, cols * n_bins + bins, torch.ones_like(cols))

    def _update_top_examples(self, rows: Tensor, cols: Tensor, values: Tensor, ids: Tensor, sources: Tensor,
                             first_window: int) -> None:
        """Merge the batch's entries into each feature's top-K. The K slots are an unordered set (sorted
        when the tables are written): a newcomer takes the slot of an example it displaces, and only
        entries above a feature's current K-th value are looked at."""
        s = self.state
        seq = ids.shape[1]
        current_min = s["top_values"].min(dim=1).values  # [d_sae]
        better = values > current_min[cols]
        c_rows, c_cols, c_vals = rows[better], cols[better], values[better]
        if len(c_vals) == 0:
            return
        order = c_vals.argsort(descending=True)
        order = order[c_cols[order].argsort(stable=True)]  # by feature, strongest first
        c_rows, c_cols, c_vals = c_rows[order], c_cols[order], c_vals[order]
        rank = torch.arange(len(c_cols)) - torch.searchsorted(c_cols, c_cols)
        top = rank < self.top_k
        c_rows, c_cols, c_vals, rank = c_rows[top], c_cols[top], c_vals[top], rank[top]
        improving, slot_of = torch.unique(c_cols, return_inverse=True)  # [m]
        k = self.top_k
        cand_values = torch.full((len(improving), k), -math.inf)
        cand_rows = torch.zeros((len(improving), k), dtype=torch.long)
        cand_values[slot_of, rank] = c_vals
        cand_rows[slot_of, rank] = c_rows
        selected = torch.cat([s["top_values"][improving], cand_values], 1).topk(k, dim=1).indices
        kept = torch.zeros(len(improving), 2 * k, dtype=torch.bool).scatter_(1, selected, True)
        freed = ~kept[:, :k]  # [m, K] slots whose example was displaced
        entering = kept[:, k:]  # [m, K] candidates that enter; as many per row as freed slots
        row, slot = freed.nonzero(as_tuple=True)  # row-major: pairs up with the next line
        _, cand = entering.nonzero(as_tuple=True)
        feature, flat_row = improving[row], cand_rows[row, cand]
        b, t = flat_row // seq, flat_row % seq
        ctx_t = t[:, None] + self.offsets  # [n, C]
        valid = (ctx_t >= 0) & (ctx_t < seq)
        ctx_rows = b[:, None] * seq + ctx_t.clamp(0, seq - 1)
        s["top_values"][feature, slot] = cand_values[row, cand]
        s["top_source"][feature, slot] = sources.reshape(-1, 2)[flat_row]
        s["top_location"][feature, slot] = torch.stack([b + first_window, t], -1)
        s["top_context_ids"][feature, slot] = ids.reshape(-1)[ctx_rows].masked_fill(~valid, -1)
        lookup = _SparseLookup(rows, cols, values, self.d_sae)
        s["top_context_acts"][feature, slot] = lookup(ctx_rows, feature[:, None]).masked_fill(~valid, 0.0)

    def _update_top_tokens(self, cols: Tensor, token_ids: Tensor, values: Tensor) -> None:
        """Queue (feature, token, activation) entries that can still enter a feature's top tokens."""
        passing = values > self._token_threshold[cols]
        self._pending_tokens.append((cols[passing] * self.vocab_size + token_ids[passing], values[passing]))
        self._n_pending += int(passing.sum())
        if self._n_pending > self.prune_every:
            self._prune_top_tokens()

    def _prune_top_tokens(self) -> None:
        """Fold the pending entries into the table, keep the best per feature, update the thresholds."""
        s = self.state
        keys = torch.cat([s["token_keys"], *(k for k, _ in self._pending_tokens)])
        maxes = torch.cat([s["token_max"], *(v for _, v in self._pending_tokens)])
        self._pending_tokens, self._n_pending = [], 0
        unique, inverse = torch.unique(keys, return_inverse=True)
        new_max = torch.zeros(len(unique)).scatter_reduce_(0, inverse, maxes, "amax", include_self=False)
        # keep the best `max_top_tokens` per feature: sort by max desc, then stably by feature
        order = new_max.argsort(descending=True)
        order = order[(unique[order] // self.vocab_size).argsort(stable=True)]
        feature = unique[order] // self.vocab_size
        rank = torch.arange(len(order)) - torch.searchsorted(feature, feature)
        chosen = order[rank < self.max_top_tokens]
        s["token_keys"], s["token_max"] = unique[chosen], new_max[chosen]
        full = rank == self.max_top_tokens - 1  # the M-th best of a feature with a full table
        self._token_threshold = torch.full((self.d_sae,), -math.inf)
        self._token_threshold[feature[full]] = new_max[order[full]]

    def sorted_top_examples(self) -> dict[str, Tensor]:
        """The top-K buffers with each feature's examples sorted, strongest first."""
        s = self.state
        order = s["top_values"].argsort(dim=1, descending=True)  # [d_sae, K]
        out = {}
        for key in ("top_values", "top_source", "top_location", "top_context_ids", "top_context_acts"):
            index = order.view(*order.shape, *([1] * (s[key].dim() - 2))).expand_as(s[key])
            out[key] = s[key].gather(1, index)
        return out

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
        self._prune_top_tokens()
        s = self.state
        feature, token = s["token_keys"] // self.vocab_size, s["token_keys"] % self.vocab_size
        order = s["token_max"].argsort(descending=True)
        order = order[feature[order].argsort(stable=True)]
        return feature[order], token[order], s["token_max"][order]


class _SparseLookup:
    """Value of (row, feature) among a batch's non-zero entries, 0 where absent."""

    def __init__(self, rows: Tensor, cols: Tensor, values: Tensor, d_sae: int) -> None:
        keys = rows * d_sae + cols
        order = keys.argsort()
        self.keys, self.values, self.d_sae = keys[order], values[order], d_sae

    def __call__(self, rows: Tensor, cols: Tensor) -> Tensor:
        wanted = rows * self.d_sae + cols
        where = torch.searchsorted(self.keys, wanted).clamp(max=max(len(self.keys) - 1, 0))
        if len(self.keys) == 0:
            return torch.zeros(wanted.shape)
        return torch.where(self.keys[where] == wanted, self.values[where], torch.zeros(()))
