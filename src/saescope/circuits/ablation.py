"""Faithfulness and completeness of a circuit: the metric with everything outside it (or it) ablated.

With ``m(·)`` the metric averaged over the evaluation pairs' clean prompts:

- ``m(M)`` the model as it is; ``m(∅)`` every node of every hook point ablated;
- faithfulness ``(m(C) - m(∅)) / (m(M) - m(∅))`` with every node *outside* the circuit ablated;
- completeness, the same ratio with the circuit's own nodes ablated (``m(M \\ C)``; low is complete).

Ablation replaces a node's value by its ``mean`` over the evaluation prompts (per position when they
all have one length, else over positions; the paper's choice), by ``zero``, or by its value on another
prompt of the same length (``resample``, a seeded permutation). At each hook point the activation
becomes ``D.decode(f') + e'`` with the ablated entries of ``f``/``e`` replaced, after upstream
ablations have changed it; attention sinks pass through. All through ``model.hooks.intervene``.

Example::

    table = faithfulness_curve(lm, saes, circuit, read_pairs("sva_simple_test"), thresholds=[0.05, 0.1, 0.2])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from saescope.circuits.attribution import Metric, default_metric, metric_input
from saescope.circuits.data import Pair
from saescope.circuits.find import pair_batches
from saescope.circuits.graph import Circuit
from saescope.circuits.nodes import Dictionary, NodeState, node_states, ordered_hooks, split
from saescope.errors import SaescopeError
from saescope.model.hooks import intervene
from saescope.model.loading import LoadedModel

ABLATIONS = ("mean", "zero", "resample")
Masks = dict[str, tuple[Tensor, Tensor]]  # hook -> (keep features [seq|1, d_sae], keep errors [seq|1])


@dataclass
class FaithfulnessPoint:
    """One row of the curve: the pruning threshold, circuit size, faithfulness and completeness."""

    node_threshold: float | None
    nodes: int
    faithfulness: float
    completeness: float
    metric_circuit: float
    metric_complement: float


class CircuitAblator:
    """Evaluates the metric on pairs with chosen nodes kept and the rest ablated (see the module docstring)."""

    def __init__(self, lm: LoadedModel, dictionaries: Mapping[str, Dictionary], pairs: list[Pair],
                 ablation: str = "mean", metric: Metric | None = None, batch_size: int = 64, seed: int = 0) -> None:
        if ablation not in ABLATIONS:
            raise SaescopeError(f"unknown ablation {ablation!r}: use mean, zero or resample")
        self.lm, self.dictionaries, self.ablation, self.metric = lm, dictionaries, ablation, metric
        self.hooks = ordered_hooks(lm, dictionaries)
        self.batches, _ = pair_batches(lm, pairs, batch_size)
        self.states = [node_states(lm, dictionaries, b.clean_ids.to(lm.device)) for b in self.batches]
        self.references = self._references(seed)
        self.lengths = {b.clean_ids.shape[1] for b in self.batches}

    def metric_with(self, masks: Masks | None) -> float:
        """Mean metric with the nodes where ``masks`` is True kept (``None``: the model as it is)."""
        total, count = 0.0, 0
        for batch, states, reference in zip(self.batches, self.states, self.references):
            batch = batch.to(self.lm.device)
            fns = {} if masks is None else {h: self._splice(h, masks[h], states[h], reference[h]) for h in self.hooks}
            with torch.no_grad(), intervene(self.lm.model, fns):
                metric = self.metric or default_metric(batch)
                values = metric(metric_input(self.lm, batch.clean_ids, metric), batch)
            total += float(values.sum())
            count += len(batch)
        return total / count

    def masks(self, circuit: Circuit | None, invert: bool = False) -> Masks:
        """Keep-masks for ``circuit``'s nodes (``None``: no node), or for every other node with ``invert``."""
        masks: Masks = {}
        for hook in self.hooks:
            d_sae = self.states[0][hook].f.shape[-1]
            per_position = circuit is not None and any(n.position is not None for n in circuit.nodes)
            width = max(self.lengths) if per_position else 1
            keep_f = torch.zeros(width, d_sae, dtype=torch.bool, device=self.lm.device)
            keep_e = torch.zeros(width, dtype=torch.bool, device=self.lm.device)
            for node in (circuit.nodes_at(hook) if circuit is not None else []):
                rows = slice(None) if node.position is None else node.position
                if node.is_error:
                    keep_e[rows] = True
                else:
                    keep_f[rows, node.index] = True
            masks[hook] = (~keep_f, ~keep_e) if invert else (keep_f, keep_e)
        return masks

    def _splice(self, hook: str, mask: tuple[Tensor, Tensor], state: NodeState, reference: tuple[Tensor, Tensor]):
        keep_f, keep_e = mask
        ref_f, ref_e = reference
        dictionary = self.dictionaries[hook]

        def fn(a: Tensor) -> Tensor:
            f, e = split(dictionary, a)
            seq = a.shape[1]
            kf = keep_f if len(keep_f) == 1 else keep_f[:seq]
            ke = keep_e if len(keep_e) == 1 else keep_e[:seq]
            f = torch.where(kf, f, ref_f)
            e = torch.where(ke[:, None], e, ref_e)
            return torch.where(state.sink[..., None], a, (dictionary.decode(f) + e).to(a.dtype))
        return fn

    def _references(self, seed: int) -> list[dict[str, tuple[Tensor, Tensor]]]:
        if self.ablation == "zero":
            return [{h: (torch.zeros_like(s[h].f), torch.zeros_like(s[h].e)) for h in self.hooks} for s in self.states]
        if self.ablation == "resample":
            generator = torch.Generator().manual_seed(seed)
            out = []
            for states in self.states:
                order = torch.randperm(len(states[self.hooks[0]].f), generator=generator).to(self.lm.device)
                out.append({h: (states[h].f[order], states[h].e[order]) for h in self.hooks})
            return out
        return self._means()

    def _means(self) -> list[dict[str, tuple[Tensor, Tensor]]]:
        one_length = len({b.clean_ids.shape[1] for b in self.batches}) == 1
        means = {}
        for hook in self.hooks:
            if one_length:  # per position, over all prompts
                f = torch.cat([s[hook].f for s in self.states]).mean(0, keepdim=True)
                e = torch.cat([s[hook].e for s in self.states]).mean(0, keepdim=True)
            else:  # over prompts and positions, sinks left out
                keep = [~s[hook].sink for s in self.states]
                f = torch.cat([s[hook].f[k] for s, k in zip(self.states, keep)]).mean(0)[None, None]
                e = torch.cat([s[hook].e[k] for s, k in zip(self.states, keep)]).mean(0)[None, None]
            means[hook] = (f, e)
        return [{h: (means[h][0].expand_as(s[h].f), means[h][1].expand_as(s[h].e)) for h in self.hooks}
                for s in self.states]


def faithfulness_curve(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], circuit: Circuit, pairs: list[Pair],
                       thresholds: list[float] | None = None, top_ns: list[int] | None = None, ablation: str = "mean",
                       metric: Metric | None = None) -> tuple[list[FaithfulnessPoint], dict[str, float]]:
    """Faithfulness and completeness of ``circuit`` pruned at each threshold (or to each size ``top_ns``)."""
    ablator = CircuitAblator(lm, dictionaries, pairs, ablation, metric)
    if any(n.position is not None for n in circuit.nodes) and len(ablator.lengths) > 1:
        raise SaescopeError("this circuit has a node per position (aggregation none): evaluate it on prompts of one length")
    full, empty = ablator.metric_with(None), ablator.metric_with(ablator.masks(None))
    span = full - empty
    if abs(span) < 1e-9:
        raise SaescopeError("the metric is the same with every node ablated as without: faithfulness is undefined")
    cuts = [(t, circuit.prune(node_threshold=t)) for t in (thresholds or [])]
    cuts += [(None, circuit.prune(top_n=n)) for n in (top_ns or [])]
    points = []
    for threshold, pruned in cuts:
        m_c = ablator.metric_with(ablator.masks(pruned))
        m_not_c = ablator.metric_with(ablator.masks(pruned, invert=True))
        points.append(FaithfulnessPoint(threshold, len(pruned.nodes), (m_c - empty) / span, (m_not_c - empty) / span,
                                        m_c, m_not_c))
    return points, {"metric_model": full, "metric_empty": empty}
