"""Influence, pruning and the two scores of an attribution graph, as circuit-tracer defines them.

- **Influence**: with ``Â`` the adjacency's absolute values normalised so each row sums to 1, a node's
  influence on the output is ``w·(Â + Â² + …)`` where ``w`` holds the logit probabilities.
- **Pruning** (``prune``): keep the nodes carrying ``node_threshold`` (0.8) of the total influence,
  then the edges carrying ``edge_threshold`` (0.98) of the edge influence, then drop features and errors
  left without an outgoing edge and features without an incoming one, until nothing changes. Tokens and
  logits always stay. ``max_nodes`` caps the features kept (the most influential).
- **Replacement score**: the share of the tokens' and errors' influence that the tokens carry.
- **Completeness score**: each node's share of incoming (normalised) weight that does not come from
  error nodes, averaged with weights = influence + logit weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saescope.errors import SaescopeError


def normalised(adjacency: Tensor) -> Tensor:
    absolute = adjacency.abs()
    return absolute / absolute.sum(1, keepdim=True).clamp_min(1e-10)


def influence(matrix: Tensor, weights: Tensor, max_iter: int = 1000) -> Tensor:
    """``weights·(M + M² + …)`` by repeated products (``M`` nilpotent: the graph has no cycles)."""
    current = weights @ matrix
    total = current.clone()
    for _ in range(max_iter):
        if not bool(current.any()):
            return total
        current = current @ matrix
        total += current
    raise SaescopeError("influence did not converge: the graph has a cycle")


def estimated_influence(adjacency: Tensor, logit_weights: Tensor) -> Tensor:
    """Every node's influence on the logits through a square adjacency."""
    return influence(normalised(adjacency), logit_weights)


def rows_influence(rows: Tensor, row_nodes: Tensor, logit_probabilities: Tensor, n_nodes: int,
                   max_iter: int = 1000) -> Tensor:
    """Influence on the logits from only the rows computed so far: ``rows[i]`` are the incoming edges of
    node ``row_nodes[i]`` (the logit rows first, weighted by ``logit_probabilities``). Nodes without a row
    end their paths. Returns one value per node."""
    norm = normalised(rows)
    slot = torch.full((n_nodes,), -1, dtype=torch.long)
    slot[row_nodes] = torch.arange(len(row_nodes))
    current = torch.zeros(len(row_nodes))
    current[:len(logit_probabilities)] = logit_probabilities.float()
    total = torch.zeros(n_nodes)
    for _ in range(max_iter):
        reached = current @ norm
        total += reached
        has_row = slot >= 0
        current = torch.zeros(len(row_nodes))
        current[slot[has_row]] = reached[has_row]
        if not bool(current.any()):
            return total
    raise SaescopeError("influence did not converge: the graph has a cycle")


def logit_weights(graph) -> Tensor:
    weights = torch.zeros(graph.adjacency.shape[0])
    weights[graph.logit_index(0):] = graph.logit_probabilities.float()
    return weights


def _threshold(scores: Tensor, share: float) -> Tensor:
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    return ordered[min(int(torch.searchsorted(cumulative, torch.tensor(share))), len(ordered) - 1)]


@dataclass
class Pruned:
    node_mask: Tensor  # [n_nodes] bool
    edge_mask: Tensor  # [n_nodes, n_nodes] bool
    influence: Tensor  # [n_nodes]: each node's influence on the logits


def check_thresholds(node_threshold: float, edge_threshold: float) -> None:
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise SaescopeError(f"{name} must be between 0 and 1, got {value}")


def prune(graph, node_threshold: float = 0.8, edge_threshold: float = 0.98, max_nodes: int | None = None) -> Pruned:
    """The nodes and edges kept (module docstring)."""
    check_thresholds(node_threshold, edge_threshold)
    weights = logit_weights(graph)
    node_influence = estimated_influence(graph.adjacency, weights)
    keep = node_influence >= _threshold(node_influence, node_threshold)
    fixed = graph.token_index(0)  # tokens and logits from here on
    keep[fixed:] = True
    if max_nodes is not None:
        features = node_influence[:graph.n_features]
        if graph.n_features > max_nodes:
            keep[:graph.n_features] &= features >= features.topk(max_nodes).values[-1]
    matrix = graph.adjacency.clone()
    matrix[~keep] = 0
    matrix[:, ~keep] = 0
    norm = normalised(matrix)
    edge_scores = norm * (influence(norm, weights) + weights)[:, None]
    edges = (edge_scores >= _threshold(edge_scores, edge_threshold)) & (edge_scores > 0)
    while True:
        before = keep.clone()
        edges &= keep[:, None] & keep[None, :]
        keep[:fixed] &= edges[:, :fixed].any(0)  # features and errors need an outgoing edge
        keep[:graph.n_features] &= edges[:graph.n_features].any(1)  # and features an incoming one
        if bool((keep == before).all()):
            break
    return Pruned(keep, edges, node_influence)


def graph_scores(graph) -> tuple[float, float]:
    """``(replacement, completeness)`` (module docstring)."""
    weights = logit_weights(graph)
    norm = normalised(graph.adjacency)
    node_influence = influence(norm, weights)
    errors = slice(graph.error_index(0, 0), graph.token_index(0))
    tokens = slice(graph.token_index(0), graph.logit_index(0))
    token_influence, error_influence = node_influence[tokens].sum(), node_influence[errors].sum()
    replacement = float(token_influence / (token_influence + error_influence).clamp_min(1e-30))
    non_error = 1 - norm[:, errors].sum(-1)
    output = node_influence + weights
    completeness = float((non_error * output).sum() / output.sum())
    return replacement, completeness
