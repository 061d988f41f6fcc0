"""Contexts sampled across each feature's activation range, on text the RUN never saw (``saescope features sample``).

The top-K table of a RUN shows a feature at its strongest; an explanation must also hold for its weak
activations, and a scorer must test it on contexts the explainer never saw. This pass runs the model +
SAE over *other* windows (the embedded corpus' held-out split, or a file corpus after the RUN's windows)
for chosen features and keeps, per feature:

- ``per_bin`` contexts in each of ``bins`` activation quantile bins (quantile edges from the RUN's
  histogram of that feature's non-zero activations), and
- ``per_bin`` contexts where the feature does not fire (``quantile = -1``), at random positions,

each twice: once for the explainer (``split = "explain"``) and once for the scorers (``"score"``), the
split being by document, so no text is shared between the two. Sampling is exact reservoir sampling: every
candidate gets a pseudo-random priority, a hash of (seed, window, position, feature), and a group keeps its
``per_bin`` highest priorities; negative positions are drawn per window from (seed, window). So the result
does not depend on batch size. Written to ``RUN/samples.parquet`` (same columns as ``examples.parquet``, plus
``quantile`` and ``split``) and ``RUN/samples.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.activations.read import hook_activations
from saescope.corpus import load_corpus, windows_with_sources
from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun, TokenDecoder, write_parquet
from saescope.features.sample_config import SampleConfig
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.storage import write_json

SPLITS = ("explain", "score")


def quantile_edges(run: FeatureRun, features: list[int], bins: int) -> Tensor:
    """``[len(features), bins - 1]`` inner edges between activation quantile bins, read off the RUN's histogram."""
    counts, edges = run.histograms
    out = torch.empty(len(features), bins - 1, dtype=torch.float64)
    for row, feature in enumerate(features):
        cumulative = np.cumsum(counts[feature]) / max(counts[feature].sum(), 1)
        for b in range(1, bins):
            out[row, b - 1] = float(edges[1 + min(int(np.searchsorted(cumulative, b / bins)), len(counts[feature]) - 1)])
    return out


class _Reservoir:
    """The kept candidates of every (feature row, bin, split) group, merged batch by batch."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.table: dict[str, Tensor] | None = None

    def offer(self, candidates: dict[str, Tensor]) -> None:
        merged = candidates if self.table is None else {k: torch.cat([self.table[k], v]) for k, v in candidates.items()}
        self.table = {k: v[_top_per_group(merged["group"], merged["priority"], self.keep)] for k, v in merged.items()}


def _top_per_group(group: Tensor, priority: Tensor, keep: int) -> Tensor:
    """Indices of the ``keep`` highest priorities within each group."""
    order = torch.argsort(group.double() * 2.0 + (1.0 - priority.double()), stable=True)
    sorted_group = group[order]
    _, counts = torch.unique_consecutive(sorted_group, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return order[(torch.arange(len(order)) - starts) < keep]


def _priority(seed: int, window: Tensor, position: Tensor, feature: Tensor) -> Tensor:
    """A uniform [0, 1) number per candidate, a hash of (seed, window, position, feature) (splitmix64)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + window.numpy().astype(np.uint64) * np.uint64(1_000_003)
             + position.numpy().astype(np.uint64) * np.uint64(65_537) + feature.numpy().astype(np.uint64))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) / float(2**53))


def _candidates(acts: Tensor, keep: Tensor, doc_split: Tensor, edges: Tensor, config: SampleConfig,
                first_window: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(batch row, position, feature row, group)`` of every activating token and of random non-firing ones."""
    n_bins = config.bins + 1  # bin 0: does not fire; 1..bins: quantiles
    b, t, f = (acts > 0).logical_and(keep[..., None]).nonzero(as_tuple=True)
    values = acts[b, t, f].double()
    quantile = 1 + (values[:, None] > edges[f]).sum(1)
    rows, width = keep.shape
    nb = torch.arange(rows).repeat_interleave(config.negatives_per_window)
    nt = torch.cat([torch.randint(1, width, (config.negatives_per_window,),
                                  generator=torch.Generator().manual_seed(config.seed * 1_000_003 + first_window + r))
                    for r in range(rows)])
    fire = acts[nb, nt] > 0  # [n, F]
    ni, nf = (~fire & keep[nb, nt, None]).nonzero(as_tuple=True)
    b, t, f = torch.cat([b, nb[ni]]), torch.cat([t, nt[ni]]), torch.cat([f, nf])
    quantile = torch.cat([quantile, torch.zeros(len(ni), dtype=torch.long)])
    group = (f * n_bins + quantile) * 2 + doc_split[b, t]
    return b, t, f, group


def _contexts(ids: Tensor, acts: Tensor, b: Tensor, t: Tensor, f: Tensor, left: int, right: int) -> tuple[Tensor, Tensor]:
    """``(ids [n, width], acts [n, width])`` around each (row, position), -1 ids outside the window."""
    width = left + right + 1
    padded_ids = torch.nn.functional.pad(ids, (left, right), value=-1)
    padded_acts = torch.nn.functional.pad(acts, (0, 0, left, right))
    offsets = t[:, None] + torch.arange(width)[None]
    return padded_ids[b[:, None], offsets], padded_acts[b[:, None], offsets, f[:, None]]


@torch.no_grad()
def sample_contexts(lm: LoadedModel, sae: SAE, run: FeatureRun, features: list[int],
                    config: SampleConfig | None = None, progress: bool = True) -> pd.DataFrame:
    """Sample contexts of ``features`` across their activation range and write ``RUN/samples.parquet``.

    Example::

        table = sample_contexts(lm, sae, FeatureRun.load("runs/default"), [10, 42], SampleConfig(tokens=50_000))
        table[(table.feature == 42) & (table.split == "score")]
    """
    config = config or SampleConfig()
    run.check_sae(sae)
    features = [run.check_feature(f) for f in features]
    if not features:
        raise SaescopeError("no features to sample")
    manifest = run.manifest
    context = int(manifest["context"])
    if manifest["corpus"] == "embedded":
        docs, start = load_corpus("embedded", "heldout"), 0
    else:
        docs, start = load_corpus(manifest["corpus"], "all"), int(manifest["windows"])
    edges = quantile_edges(run, features, config.bins)
    index = torch.tensor(features)
    reservoir = _Reservoir(config.per_bin)
    n_windows = math.ceil(config.tokens / context)
    windows = windows_with_sources(lm.tokenizer, docs, context, seed=config.seed, start=start)
    done = 0
    for _ in tqdm(range(math.ceil(n_windows / config.batch_size)), disable=not progress, desc="sample contexts"):
        batch = [w for _, w in zip(range(min(config.batch_size, n_windows - done)), windows)]
        if not batch:
            break
        ids = torch.stack([i for i, _ in batch])
        doc_split = torch.stack([s for _, s in batch])[..., 0] % 2
        x, keep = hook_activations(lm, manifest["hook"], ids.to(lm.device))
        acts = sae.encode(x.to(sae.W_enc.dtype))[..., index.to(x.device)].float().cpu()
        b, t, f, group = _candidates(acts, keep.cpu(), doc_split, edges, config, start + done)
        priority = _priority(config.seed, b + start + done, t, f)
        chosen = _top_per_group(group, priority, config.per_bin)
        b, t, f = b[chosen], t[chosen], f[chosen]
        context_ids, context_acts = _contexts(ids, acts, b, t, f, config.left, config.right)
        reservoir.offer({"group": group[chosen], "priority": priority[chosen], "feature_row": f,
                         "activation": acts[b, t, f], "window": b + start + done, "position": t,
                         "context_ids": context_ids, "context_acts": context_acts})
        done += len(batch)
    if reservoir.table is None:
        raise SaescopeError(f"corpus {manifest['corpus']!r} has no text left to sample after the RUN's windows")
    table = _table(reservoir.table, index, config, TokenDecoder(lm.tokenizer))
    write_parquet(run.path / "samples.parquet", table)
    write_json(run.path / "samples.json", {**asdict(config), "features": features, "windows": done,
                                           "tokens": done * context})
    return table


def _table(kept: dict[str, Tensor], index: Tensor, config: SampleConfig, decode: TokenDecoder) -> pd.DataFrame:
    n_bins = config.bins + 1
    group = kept["group"]
    valid = kept["context_ids"] >= 0
    first_valid = valid.int().argmax(dim=1)
    table = pd.DataFrame({
        "feature": index[kept["feature_row"]].numpy(), "quantile": ((group // 2) % n_bins - 1).numpy(),
        "split": [SPLITS[int(s)] for s in group % 2], "activation": kept["activation"].numpy(),
        "window": kept["window"].numpy(), "position": kept["position"].numpy(),
        "token": [decode.one(int(i)) for i in kept["context_ids"][:, config.left]],
        "context_tokens": [[decode.one(int(i)) for i in row[m]] for row, m in zip(kept["context_ids"], valid)],
        "context_acts": [row[m].tolist() for row, m in zip(kept["context_acts"], valid)],
        "center": (config.left - first_valid).numpy(),
    })
    return table.sort_values(["feature", "split", "quantile", "activation"], ascending=[True, True, False, False],
                             ignore_index=True)


def load_samples(run: FeatureRun) -> pd.DataFrame:
    """``RUN/samples.parquet``, or a one-line error saying which command makes it."""
    table = run.optional_table("samples.parquet")
    if table is None:
        raise SaescopeError(f"{run.path} has no sampled contexts (samples.parquet): make them with "
                            f"`saescope features sample {run.path} --features ...`")
    return table
