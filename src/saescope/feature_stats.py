"""Streaming per-feature statistics over a corpus, in fixed memory, vectorized over all features.

One ``update`` per batch of SAE activations; nothing is stored per token. Kept:
- raw moments Σa, Σa², Σa³, Σa⁴ (float64) over all tokens -> mean, std, skewness, kurtosis with the
  definitions of ``numpy.std`` (ddof 0), ``scipy.stats.skew`` and ``scipy.stats.kurtosis`` (biased,
  Fisher); firing count, max, a histogram of the non-zero activations on fixed log-spaced bins;
- the top-K activating tokens of every feature with their context window (token ids and the
  feature's activation at every context token), document index and position;
- the top tokens (distinct vocabulary ids) of every feature by their largest activation.

Kept exact and cheap by filters that can only drop entries that could never be in the result:
an entry reaches the top-K merge only above the feature's current K-th value, and the top-token
queue only above the feature's M-th best token and above the max its token already holds in the
table; the queue is folded into the table (best M per feature) every ``prune_every`` entries.
Context activations are read from a dense per-batch table reused between batches (when it fits
in ``dense_lookup_limit`` elements), else by binary search over the batch's sorted entries.
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
        self.dense_lookup_limit = 2**26  # elements (256 MB) of the dense per-batch look-up table
        self._dense: Tensor | None = None
        self._token_threshold = torch.full((d_sae,), -math.inf)  # M-th best max per feature (full tables)
        self._pending_tokens: list[tuple[Tensor, Tensor]] = []
        self._table_index = (torch.zeros(0, dtype=torch.int64), torch.zeros(0))  # table sorted by key
        self._n_pending = 0
        width = len(self.offsets)
        self.state: dict[str, Tensor] = {
            "n_tokens": torch.zeros((), dtype=torch.int64),
            "moments": torch.zeros(4, d_sae, dtype=torch.float64),  # Σa, Σa², Σa³, Σa⁴
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
        self._prune_top_tokens()  # rebuilds the thresholds and the index of the loaded table

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
        live = ((values > 0) & keep.reshape(-1)[rows]).nonzero().squeeze(1)
        rows, cols, values = rows.index_select(0, live), cols.index_select(0, live), values.index_select(0, live)
        self._update_moments(int(keep.sum()), cols, values)
        self._update_top_examples(rows, cols, values, ids, sources, first_window)
        self._update_top_tokens(cols, ids.reshape(-1)[rows], values)

    def _update_moments(self, n_kept: int, cols: Tensor, values: Tensor) -> None:
        s = self.state
        s["n_tokens"] += n_kept
        v64 = values.double()
        power = v64
        for p in range(4):
            s["moments"][p].index_add_(0, cols, power)
            power = power * v64
        s["count"] += torch.bincount(cols, minlength=self.d_sae)
        s["max"].scatter_reduce_(0, cols, values, "amax")
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
        better = (values > current_min[cols]).nonzero().squeeze(1)
        c_rows, c_cols, c_vals = rows.index_select(0, better), cols.index_select(0, better), values.index_select(0, better)
        if len(c_vals) == 0:
            return
        order = _group_then_value_keys(c_cols, c_vals).argsort(stable=True)  # by feature, strongest first
        c_rows, c_cols, c_vals = c_rows[order], c_cols[order], c_vals[order]
        rank = _rank_in_groups(c_cols)
        top = rank < self.top_k
        c_rows, c_cols, c_vals, rank = c_rows[top], c_cols[top], c_vals[top], rank[top]
        improving, counts = torch.unique_consecutive(c_cols, return_counts=True)  # [m]
        slot_of = torch.repeat_interleave(torch.arange(len(improving)), counts)
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
        entry = feature * self.top_k + slot  # into the [d_sae * K] flattened buffers
        for key, value in (("top_values", cand_values[row, cand]),
                           ("top_source", sources.reshape(-1, 2)[flat_row]),
                           ("top_location", torch.stack([b + first_window, t], -1)),
                           ("top_context_ids", ids.reshape(-1)[ctx_rows].masked_fill_(~valid, -1)),
                           ("top_context_acts", self._lookup(rows, cols, values, ids.numel(), ctx_rows,
                                                             feature[:, None]).masked_fill_(~valid, 0.0))):
            s[key].view(self.d_sae * self.top_k, -1).index_copy_(0, entry, value.view(len(entry), -1))

    def _lookup(self, rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, want_rows: Tensor,
                want_cols: Tensor) -> Tensor:
        """Activation at (``want_rows``, ``want_cols``) given the batch's non-zero entries, 0 where absent.

        Through a dense [rows, d_sae] table that is kept between batches (filled, read, then zeroed at
        the same entries, so no per-batch allocation) when it fits in ``dense_lookup_limit`` elements;
        else by binary search over the sorted entries."""
        if n_rows * self.d_sae > self.dense_lookup_limit:
            return _SparseLookup(rows, cols, values, self.d_sae)(want_rows, want_cols)
        if self._dense is None or len(self._dense) < n_rows * self.d_sae:
            self._dense = torch.zeros(n_rows * self.d_sae)
        entries = rows * self.d_sae + cols
        self._dense.index_copy_(0, entries, values)
        found = self._dense.take(want_rows * self.d_sae + want_cols)
        self._dense.index_fill_(0, entries, 0.0)
        return found

    def _update_top_tokens(self, cols: Tensor, token_ids: Tensor, values: Tensor) -> None:
        """Queue (feature, token, activation) entries that can still enter a feature's top tokens."""
        passing = (values > self._token_threshold[cols]).nonzero().squeeze(1)
        keys = cols.index_select(0, passing) * self.vocab_size + token_ids.index_select(0, passing)
        values = values.index_select(0, passing)
        known_keys, known_max = self._table_index
        if len(known_keys):  # drop entries whose token is in the table already with a higher max
            where = torch.searchsorted(known_keys, keys).clamp_max_(len(known_keys) - 1)
            new = (known_keys[where] != keys) | (values > known_max[where])
            keys, values = keys[new], values[new]
        self._pending_tokens.append((keys, values))
        self._n_pending += len(keys)
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
        # keep the best `max_top_tokens` per feature: order by feature, then by max descending
        order = _group_then_value_keys(unique // self.vocab_size, new_max).argsort(stable=True)
        feature = unique[order] // self.vocab_size
        rank = _rank_in_groups(feature)
        chosen = order[rank < self.max_top_tokens]
        s["token_keys"], s["token_max"] = unique[chosen], new_max[chosen]
        full = rank == self.max_top_tokens - 1  # the M-th best of a feature with a full table
        self._token_threshold = torch.full((self.d_sae,), -math.inf)
        self._token_threshold[feature[full]] = new_max[order[full]]
        by_key = s["token_keys"].argsort()
        self._table_index = (s["token_keys"][by_key], s["token_max"][by_key])

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


def _group_then_value_keys(groups: Tensor, values: Tensor) -> Tensor:
    """int64 keys whose ascending order is by ``groups`` (< 2**32), then by ``values`` (positive
    float32) descending: the bit pattern of a positive float orders like the float."""
    bits = values.float().contiguous().view(torch.int32).long()
    return (groups.long() << 31) | (0x7FFFFFFF - bits)


def _rank_in_groups(sorted_groups: Tensor) -> Tensor:
    """Position of every element within its run of equal values in ``sorted_groups``: 0, 1, 2, ..."""
    index = torch.arange(len(sorted_groups))
    starts = torch.ones(len(sorted_groups), dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return index - torch.where(starts, index, 0).cummax(0).values


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
