"""Edge effects between the nodes of consecutive hook points, by vector-Jacobian products.

As in Marks et al. (2024), the effect of upstream node ``u`` on the metric *through* downstream
node ``d`` is ``∇_d m · (∂d/∂u) · Δu``: the metric gradient at ``d`` (from the node attribution,
IG-averaged when ``method="ig"``), the Jacobian of ``d`` in ``u`` at the clean run, and the patch
change of ``u``. For each downstream node one backward pass (of ``∇_d m · d`` into the upstream
hook point's leaves, reusing one forward graph) gives its edges from every upstream node at once.
The forward stops at the downstream hook point.

Example::

    sums = edge_sums(lm, saes, "blocks.6.hook_resid_post", "blocks.9.hook_resid_post", batch, effects,
                     upstream_nodes, downstream_nodes)          # {(source key, target key): summed effect}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from saescope.circuits.attribution import NodeEffects
from saescope.circuits.data import PairBatch
from saescope.circuits.graph import Node
from saescope.circuits.nodes import Dictionary, split
from saescope.model.hooks import StopForward, intervene
from saescope.model.loading import LoadedModel


def edge_sums(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], upstream: str, downstream: str,
              batch: PairBatch, effects: NodeEffects, sources: list[Node], targets: list[Node]) -> dict[tuple[str, str], float]:
    """Edge effects from ``sources`` (at ``upstream``) to ``targets`` (at ``downstream``), summed over the batch."""
    if not sources or not targets:
        return {}
    ids = batch.clean_ids.to(lm.device)
    clean_u, patch_u = effects.clean[upstream], effects.patch[upstream]
    f_u = clean_u.f.clone().requires_grad_(True)
    e_u = clean_u.e.clone().requires_grad_(True)
    captured: dict[str, Tensor] = {}

    def splice(a: Tensor) -> Tensor:
        value = dictionaries[upstream].decode(f_u) + e_u
        return torch.where(clean_u.sink[..., None], a, value.to(a.dtype))

    def record(a: Tensor) -> None:
        captured["x"] = a

    with torch.enable_grad():
        with intervene(lm.model, {upstream: splice, downstream: record}, stop_after_last=True):
            try:
                lm.model(input_ids=ids, use_cache=False)
            except StopForward:
                pass
        d_f, d_e = split(dictionaries[downstream], captured["x"])
        delta_f, delta_e = patch_u.f - clean_u.f, patch_u.e - clean_u.e
        keep = (~clean_u.sink).float()
        sums: dict[tuple[str, str], float] = {}
        for j, target in enumerate(targets):
            positions = slice(None) if target.position is None else slice(target.position, target.position + 1)
            if target.is_error:
                score = (effects.grad_e[downstream][:, positions] * d_e[:, positions]).sum()
            else:
                score = (effects.grad_f[downstream][:, positions, target.index] * d_f[:, positions, target.index]).sum()
            if not score.requires_grad:
                continue
            g_f, g_e = torch.autograd.grad(score, [f_u, e_u], retain_graph=j < len(targets) - 1, allow_unused=True)
            through_f = (g_f * delta_f) * keep[..., None] if g_f is not None else torch.zeros_like(delta_f)
            through_e = (g_e * delta_e).sum(-1) * keep if g_e is not None else torch.zeros_like(keep)
            for source in sources:
                sums[(source.key, target.key)] = _node_value(source, through_f, through_e)
    return sums


def _node_value(node: Node, through_f: Tensor, through_e: Tensor) -> float:
    """A node's entry of per-pair edge tensors ``[n, seq, d_sae]`` / ``[n, seq]``, summed over pairs (and positions)."""
    if node.is_error:
        values = through_e if node.position is None else through_e[:, node.position]
    else:
        values = through_f[..., node.index] if node.position is None else through_f[:, node.position, node.index]
    return float(values.sum())
