"""Streaming per-feature statistics over a corpus, in fixed memory.

One ``update`` per batch of SAE activations; nothing is stored per token. Kept:
- raw moments Σa, Σa², Σa³, Σa⁴ (float64) over all tokens -> mean, std, skewness, kurtosis with the
  definitions of ``numpy.std`` (ddof 0), ``scipy.stats.skew`` and ``scipy.stats.kurtosis`` (biased,
  Fisher); firing count, max, a histogram of the non-zero activations on fixed log-spaced bins;
- the top-K activating tokens of every feature with their context window (token ids and the
  feature's activation at every context token), document index and position;
- the top tokens (distinct vocabulary ids) of every feature by their largest activation.

Both top lists are fixed-size tables per feature, updated in place, exactly (an entry only looks at
a feature's table when it beats the table's smallest value); the per-entry work runs in compiled
loops (``feature_kernels``).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.features.kernels import add_moments, live_entries, merge_top_k, merge_top_tokens, write_contexts

DEAD_LOG10_DENSITY = -10.0  # log10_density of a feature that never fires (as SAELens/Neuronpedia)
HIST_EDGES = torch.logspace(-3, 4, 57, dtype=torch.float64)  # 56 bins, 1e-3 .. 1e4 (values clamp in)
_HIST_EDGES = HIST_EDGES.numpy()


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
        self.context_left, self.context_right = context_left, context_right
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saescope-top-k")
        width = context_left + context_right + 1
        self.state: dict[str, Tensor] = {
            "n_tokens": torch.zeros((), dtype=torch.int64),
            "moments": torch.zeros(d_sae, 4, dtype=torch.float64),  # Σa, Σa², Σa³, Σa⁴ per feature
            "count": torch.zeros(d_sae, dtype=torch.int64),
            "max": torch.zeros(d_sae),
            "hist": torch.zeros(d_sae, len(HIST_EDGES) - 1, dtype=torch.int64),
            "top_values": torch.full((d_sae, top_k), -math.inf),
            "top_source": torch.full((d_sae, top_k, 2), -1, dtype=torch.int64),  # (doc index, position)
            "top_location": torch.full((d_sae, top_k, 2), -1, dtype=torch.int64),  # (window, position)
            "top_context_ids": torch.full((d_sae, top_k, width), -1, dtype=torch.int64),
            "top_context_acts": torch.zeros(d_sae, top_k, width),
            "top_token_ids": torch.full((d_sae, top_tokens), -1, dtype=torch.int64),  # unordered, -1 empty
            "top_token_max": torch.full((d_sae, top_tokens), -math.inf),
        }

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.contiguous() for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if any(k not in state or state[k].shape != v.shape or state[k].dtype != v.dtype for k, v in self.state.items()):
            raise SaescopeError("the checkpoint does not fit this accumulator (another SAE, top_k or saescope "
                                "version): start a new run")
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
        rows, cols = rows.detach().cpu().long().numpy(), cols.detach().cpu().long().numpy()
        values = values.detach().cpu().float().numpy()
        keep = keep.detach().cpu().reshape(-1).numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(keep) or cols.min() < 0 or cols.max() >= self.d_sae):
            raise SaescopeError(f"entries out of range: rows must be < {len(keep)} and features < {self.d_sae}")
        rows, cols, values, ascending = live_entries(rows, cols, values, keep)
        if not ascending:  # the kernels want rows ascending; sae.encode_sparse and nonzero() give that
            order = np.argsort(rows, kind="stable")
            rows, cols, values = rows[order], cols[order], values[order]
        s = {k: v.numpy() for k, v in self.state.items()}
        self.state["n_tokens"] += int(keep.sum())
        flat_ids = ids.detach().cpu().reshape(-1).long().numpy()
        flat_sources = sources.detach().cpu().reshape(-1, 2).long().numpy()
        # the kernels release the GIL and touch disjoint state: top-K examples on a second core
        examples = self._worker.submit(self._update_top_examples, rows, cols, values, flat_ids, flat_sources,
                                       ids.shape[1], first_window, s)
        add_moments(cols, values, s["moments"], s["count"], s["max"], s["hist"], _HIST_EDGES)
        merge_top_tokens(rows, cols, values, flat_ids, s["top_token_ids"], s["top_token_max"])
        examples.result()

    def _update_top_examples(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, ids: np.ndarray,
                             sources: np.ndarray, seq: int, first_window: int, s: dict[str, np.ndarray]) -> None:
        new_row = np.full(s["top_values"].shape, -1, dtype=np.int64)
        if merge_top_k(rows, cols, values, s["top_values"], new_row, s["top_location"], seq, first_window):
            write_contexts(rows, cols, values, new_row, ids, sources, seq, first_window, self.context_left,
                           self.context_right, s["top_source"], s["top_location"], s["top_context_ids"],
                           s["top_context_acts"])

    def sorted_top_examples(self) -> dict[str, Tensor]:
        """The top-K buffers with each feature's examples sorted, strongest first; ties in corpus order
        (window, then position), so one process and N merged ones write the same rows in the same order."""
        s = self.state
        location = s["top_location"]
        span = int(location[..., 1].max().clamp(min=0)) + 1
        by_place = torch.argsort(location[..., 0] * span + location[..., 1], dim=1, stable=True)
        values = s["top_values"].gather(1, by_place)
        order = by_place.gather(1, torch.argsort(values, dim=1, descending=True, stable=True))  # [d_sae, K]
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
        raw = s["moments"].T / max(n, 1.0)  # E[a], E[a²], E[a³], E[a⁴]
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
        order = s["top_token_max"].argsort(dim=1, descending=True, stable=True)
        token, best = s["top_token_ids"].gather(1, order), s["top_token_max"].gather(1, order)
        feature, slot = (token >= 0).nonzero(as_tuple=True)
        return feature, token[feature, slot], best[feature, slot]
