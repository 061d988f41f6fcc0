"""``find_circuit``: node effects over all pairs, the nodes over the threshold, the edges among them.

1. Node attribution (``attribution.attribute``) over every batch of pairs; the effects are averaged
   over pairs (per position, or summed over positions first with ``aggregation="sum"``).
2. Nodes: ``|mean effect| >= node_threshold``, at most ``max_nodes`` (the largest).
3. Edges: between the kept nodes of consecutive hook points (``edges.edge_sums``) and from the last
   hook point's nodes to the metric (their indirect effect), averaged over pairs, kept over
   ``edge_threshold``.

Example::

    saes = load_suite("default")
    circuit = find_circuit(lm, saes, read_pairs("sva_simple_train", limit=100), CircuitConfig())
    circuit.save("sva_circuit")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace

import torch
from tqdm.auto import tqdm

from saescope.circuits.attribution import Metric, NodeEffects, attribute
from saescope.circuits.config import CircuitConfig
from saescope.circuits.data import Pair, PairBatch, tokenize_pairs
from saescope.circuits.dictionaries import describe
from saescope.circuits.edges import edge_sums, merge_runs
from saescope.circuits.graph import METRIC, Circuit, Edge, Node, select_nodes
from saescope.circuits.nodes import Dictionary, ordered_hooks
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.precision import MEASURE, precision_record


def pair_batches(lm: LoadedModel, pairs: list[Pair], batch_size: int,
                 aggregation: str = "sum") -> tuple[list[PairBatch], list[int]]:
    """Tokenized batches of at most ``batch_size`` equal-length pairs (one length only for ``none``), and
    the indices of the pairs dropped for clean/patch prompts of unequal token length."""
    by_length, dropped = tokenize_pairs(lm, pairs)
    if aggregation == "none" and len(by_length) > 1:
        lengths = sorted({b.clean_ids.shape[1] - 1 for b in by_length})
        raise SaescopeError(f"aggregation none needs prompts of one length, but these have {lengths} tokens: "
                            "use --aggregation sum, or pairs of one template")
    batches = [group.select(list(range(start, min(start + batch_size, len(group)))))
               for group in by_length for start in range(0, len(group), batch_size)]
    return batches, dropped


def find_circuit(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], pairs: list[Pair], config: CircuitConfig,
                 metric: Metric | None = None, data: str = "", limit: int | None = None, progress: bool = True,
                 with_edges: bool = True) -> Circuit:
    """The circuit of ``pairs`` over the nodes of ``dictionaries`` (``{hook: SAE}``); ``data``/``limit`` record
    where the pairs came from (``read_pairs(data, limit)``); ``with_edges=False`` skips the edges."""
    hooks = ordered_hooks(lm, dictionaries)
    batches, dropped = pair_batches(lm, pairs, config.batch_size, config.aggregation)
    n_pairs = sum(len(b) for b in batches)
    runs: list[tuple[PairBatch, NodeEffects]] = []
    feature_sums: dict[str, torch.Tensor] = {}
    error_sums: dict[str, torch.Tensor] = {}
    for batch in tqdm(batches, desc=f"node effects ({config.method})", disable=not progress):
        effects = attribute(lm, dictionaries, batch, metric, config.method, config.steps)
        runs.append((batch, effects))
        for hook in hooks:
            f, e = effects.features[hook], effects.errors[hook]
            if config.aggregation == "sum":
                f, e = f.sum(1, keepdim=True), e.sum(1, keepdim=True)
            feature_sums[hook] = feature_sums.get(hook, 0) + f.sum(0)
            error_sums[hook] = error_sums.get(hook, 0) + e.sum(0)
    features = {h: (v / n_pairs).cpu() for h, v in feature_sums.items()}
    errors = {h: (v / n_pairs).cpu() for h, v in error_sums.items()}
    if config.aggregation == "sum":  # features [d_sae]; errors stay [1]
        features = {h: v[0] for h, v in features.items()}
    nodes = select_nodes(hooks, features, errors, config.node_threshold)[:config.max_nodes]
    nodes = [n if config.aggregation == "none" else _all_positions(n) for n in nodes]
    edges = _edges(lm, dictionaries, hooks, runs, nodes, n_pairs, config.edge_threshold, progress) if with_edges else []
    return Circuit(hooks, nodes, edges, settings={**_settings(config, metric), "precision": precision_record(lm.dtype, MEASURE)},
                   saes={h: describe(d) for h, d in dictionaries.items()},
                   data={"pairs": data, "limit": limit, "n_pairs": n_pairs, "dropped_unequal_length": len(dropped),
                         "prompt_tokens": sorted({b.clean_ids.shape[1] for b in batches})},
                   feature_effects=features, error_effects=errors)


def _all_positions(node: Node) -> Node:
    return replace(node, position=None)


def _edges(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], hooks: list[str],
           runs: list[tuple[PairBatch, NodeEffects]], nodes: list[Node], n_pairs: int, threshold: float,
           progress: bool) -> list[Edge]:
    sums: dict[tuple[str, str], float] = {}
    runs = merge_runs(runs)
    layers = list(zip(hooks, hooks[1:]))
    for upstream, downstream in tqdm(layers, desc="edges", disable=not progress):
        sources = [n for n in nodes if n.hook == upstream]
        targets = [n for n in nodes if n.hook == downstream]
        for batch, effects in runs:
            for key, value in edge_sums(lm, dictionaries, upstream, downstream, batch, effects, sources, targets).items():
                sums[key] = sums.get(key, 0.0) + value
    edges = [Edge(source, target, value / n_pairs) for (source, target), value in sums.items()]
    edges += [Edge(n.key, METRIC, n.effect) for n in nodes if n.hook == hooks[-1]]
    return sorted((e for e in edges if abs(e.effect) >= threshold), key=lambda e: -abs(e.effect))


def _settings(config: CircuitConfig, metric: Metric | None) -> dict:
    name = getattr(metric, "__name__", type(metric).__name__) if metric is not None else "default"
    return {**asdict(config), "metric": name}

