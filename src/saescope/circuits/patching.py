"""Exact activation patching of single nodes: the ground truth attribution estimates are checked against.

For each node, the forward pass runs on the clean prompt with only that node moved to its patch value
(``a + Δ · D.decode``-direction at its hook point and position; every later activation recomputed),
and the exact effect is ``m(patched) - m(clean)``. Rows of ``nodes x pairs`` run batched,
``nodes_per_pass`` nodes at a time (``nodes_per_pass=1`` is the classic per-node loop).

Example::

    exact = exact_effects(lm, saes, batch, circuit.nodes[:100])      # [100]: mean over the batch's pairs
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from saescope.circuits.attribution import Metric, default_metric, metric_input
from saescope.circuits.data import PairBatch
from saescope.circuits.graph import Node
from saescope.circuits.nodes import Dictionary, NodeState, node_states, ordered_hooks, zero_states
from saescope.model.hooks import intervene
from saescope.model.loading import LoadedModel


@torch.no_grad()
def exact_effects(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], batch: PairBatch, nodes: list[Node],
                  metric: Metric | None = None, nodes_per_pass: int = 16) -> Tensor:
    """``[len(nodes)]`` exact effect of patching each node alone, averaged over the pairs of ``batch``."""
    metric = metric or default_metric(batch)
    batch = batch.to(lm.device)
    ordered_hooks(lm, dictionaries)
    clean = node_states(lm, dictionaries, batch.clean_ids)
    patch = node_states(lm, dictionaries, batch.patch_ids) if batch.patch_ids is not None else zero_states(clean)
    ids = batch.clean_ids
    base = metric(metric_input(lm, ids, metric), batch)  # [n]
    effects = []
    for start in range(0, len(nodes), nodes_per_pass):
        chunk = nodes[start:start + nodes_per_pass]
        deltas = _deltas(dictionaries, clean, patch, chunk)  # {hook: [len(chunk), n, seq, d]}
        rows = batch.select(torch.arange(len(batch), device=lm.device).repeat(len(chunk)))
        fns = {hook: _adder(delta.flatten(0, 1)) for hook, delta in deltas.items()}
        with intervene(lm.model, fns):
            values = metric(metric_input(lm, rows.clean_ids, metric), rows)
        effects.append((values.view(len(chunk), len(batch)) - base).mean(1))
    return torch.cat(effects)


def _adder(delta: Tensor):
    def fn(a: Tensor) -> Tensor:
        return a + delta.to(a.dtype)
    return fn


def _deltas(dictionaries: Mapping[str, Dictionary], clean: dict[str, NodeState], patch: dict[str, NodeState],
            nodes: list[Node]) -> dict[str, Tensor]:
    deltas: dict[str, Tensor] = {}
    for row, node in enumerate(nodes):
        c, p = clean[node.hook], patch[node.hook]
        if node.hook not in deltas:
            deltas[node.hook] = torch.zeros(len(nodes), *c.e.shape, device=c.e.device)
        positions = slice(None) if node.position is None else slice(node.position, node.position + 1)
        if node.is_error:
            change = (p.e - c.e)[:, positions]  # [n, P, d]
        else:
            dictionary = dictionaries[node.hook]
            amount = (p.f - c.f)[:, positions, node.index]  # [n, P]
            one = torch.zeros(dictionary.d_sae, device=c.f.device)
            one[node.index] = 1.0
            direction = dictionary.decode(one) - dictionary.decode(torch.zeros_like(one))  # [d]
            change = amount[..., None] * direction
        keep = (~c.sink[:, positions]).float()[..., None]
        deltas[node.hook][row][:, positions] += change * keep
    return deltas


@dataclass
class PatchingCheck:
    """How well attribution estimates match exact patching on the top nodes of some pairs."""

    nodes: list[Node]
    exact: list[float]
    estimates: dict[str, list[float]]  # method -> effects of the same nodes
    pearson: dict[str, float]
    sign_agreement: dict[str, float]

    def to_dict(self) -> dict:
        return {"nodes": [n.key for n in self.nodes], "exact": self.exact, "estimates": self.estimates,
                "pearson": self.pearson, "sign_agreement": self.sign_agreement}


def check_against_patching(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], batch: PairBatch, top: int = 100,
                           steps: int = 10, metric: Metric | None = None) -> PatchingCheck:
    """Per-position node effects of ``batch`` (e.g. one pair) by ``ig`` and ``atp``; the ``top`` nodes by
    |IG effect| patched exactly one at a time; Pearson r and sign agreement of each estimate."""
    from scipy.stats import pearsonr

    from saescope.circuits.attribution import attribute
    from saescope.circuits.graph import select_nodes

    estimates = {method: attribute(lm, dictionaries, batch, metric, method, steps) for method in ("ig", "atp")}
    hooks = ordered_hooks(lm, dictionaries)
    mean = {m: ({h: e.features[h].mean(0).cpu() for h in hooks}, {h: e.errors[h].mean(0).cpu() for h in hooks})
            for m, e in estimates.items()}
    nodes = select_nodes(hooks, *mean["ig"], threshold=0.0)[:top]
    exact = exact_effects(lm, dictionaries, batch, nodes, metric).cpu()
    values = {m: torch.tensor([_entry(mean[m], n) for n in nodes]) for m in estimates}
    pearson = {m: float(pearsonr(v.numpy(), exact.numpy()).statistic) if len(nodes) > 2 else float("nan")
               for m, v in values.items()}
    signs = {m: float((torch.sign(v) == torch.sign(exact)).float().mean()) for m, v in values.items()}
    return PatchingCheck(nodes, exact.tolist(), {m: v.tolist() for m, v in values.items()}, pearson, signs)


def _entry(effects: tuple[dict[str, Tensor], dict[str, Tensor]], node: Node) -> float:
    features, errors = effects
    if node.is_error:
        return float(errors[node.hook][node.position])
    return float(features[node.hook][node.position, node.index])
