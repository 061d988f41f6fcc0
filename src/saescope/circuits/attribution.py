"""Indirect effects of every node by attribution patching (``atp``) or integrated gradients (``ig``).

The indirect effect of node ``a`` is the change in the metric when ``a`` goes from its clean value to
its patch value. Attribution patching linearises it at the clean run, ``IE ≈ ∇m · (a_patch - a_clean)``;
integrated gradients averages the gradient over ``steps`` points on the straight line between the
runs (midpoint rule, ``α = (j + ½) / steps``) for a path-exact estimate.

One backward pass per IG step serves **every** node of every hook point: at each hook point the
activation is replaced by ``D.decode(f_α) + e_α + (a - a.detach())``, where ``f_α``, ``e_α`` are leaf
tensors at the interpolated values. The value seen downstream is the interpolation, while the
straight-through term lets the gradient of the earlier hook points flow through the later ones as
if nothing were spliced in. At ``α = 0`` this is exactly the clean run's gradient. The IG path moves
all hook points together (the reference moves one sub-layer at a time, one pass per sub-layer);
``circuit patch`` measures how close either estimate is to exact activation patching.

The steps of all pairs of a batch run as one batch of ``steps x pairs`` rows.

Example::

    effects = attribute(lm, saes, batch, method="ig", steps=10)
    effects.features["blocks.12.hook_resid_post"]      # [n, seq, d_sae]: IE per pair, position, feature
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from saescope.circuits.data import PairBatch
from saescope.circuits.nodes import Dictionary, NodeState, node_states, ordered_hooks, zero_states
from saescope.errors import SaescopeError
from saescope.model.hooks import StopForward, intervene
from saescope.model.likelihood import last_token_logits
from saescope.model.loading import LoadedModel

Metric = Callable[[Tensor, PairBatch], Tensor]  # (last-token logits [n, vocab] float32, batch) -> [n]
"""A metric reads the last token's logits, or, when it has a ``readout`` attribute naming a hook point,
that hook point's activations ``[n, seq, d]`` (the forward pass then stops there)."""
METHODS = ("ig", "atp")


def metric_input(lm: LoadedModel, ids: Tensor, metric: Metric) -> Tensor:
    """What ``metric`` reads for prompts ``ids``: last-token logits, or its ``readout`` hook's activations."""
    readout = getattr(metric, "readout", None)
    if readout is None:
        return last_token_logits(lm, ids, torch.ones_like(ids))
    captured: dict[str, Tensor] = {}

    def record(a: Tensor) -> None:
        captured["x"] = a

    with intervene(lm.model, {readout: record}, stop_after_last=True):
        try:
            lm.model(input_ids=ids, use_cache=False)
        except StopForward:
            pass
    return captured["x"]


def logit_diff(logits: Tensor, batch: PairBatch) -> Tensor:
    """``logit(patch answer) - logit(clean answer)``: nodes that carry the clean answer get positive effects."""
    return (logits.gather(1, batch.patch_answer[:, None]) - logits.gather(1, batch.clean_answer[:, None]))[:, 0]


def answer_loss(logits: Tensor, batch: PairBatch) -> Tensor:
    """``-log p(answer)`` (no-pair mode): nodes whose ablation raises the loss get positive effects."""
    return -F.log_softmax(logits, dim=-1).gather(1, batch.clean_answer[:, None])[:, 0]


def default_metric(batch: PairBatch) -> Metric:
    return logit_diff if batch.patch_ids is not None else answer_loss


@dataclass
class NodeEffects:
    """Per hook point: ``features`` [n, seq, d_sae] and ``errors`` [n, seq] indirect effects, the mean
    gradients ``grad_f``/``grad_e`` they came from, and the clean and patch node states."""

    features: dict[str, Tensor]
    errors: dict[str, Tensor]
    grad_f: dict[str, Tensor]
    grad_e: dict[str, Tensor]
    clean: dict[str, NodeState]
    patch: dict[str, NodeState]


def attribute(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], batch: PairBatch, metric: Metric | None = None,
              method: str = "ig", steps: int = 10) -> NodeEffects:
    """Indirect effects of all nodes for one batch of equal-length pairs."""
    if method not in METHODS:
        raise SaescopeError(f"unknown attribution method {method!r}: use ig or atp")
    if method == "ig" and steps < 1:
        raise SaescopeError(f"steps must be at least 1, got {steps}")
    metric = metric or default_metric(batch)
    batch = batch.to(lm.device)
    hooks = ordered_hooks(lm, dictionaries)
    clean = node_states(lm, dictionaries, batch.clean_ids)
    patch = node_states(lm, dictionaries, batch.patch_ids) if batch.patch_ids is not None else zero_states(clean)
    alphas = [0.0] if method == "atp" else [(j + 0.5) / steps for j in range(steps)]
    grad_f, grad_e = _mean_gradients(lm, dictionaries, hooks, batch, clean, patch, alphas, metric)
    features, errors = {}, {}
    for hook in hooks:
        keep = (~clean[hook].sink).float()
        features[hook] = grad_f[hook] * (patch[hook].f - clean[hook].f) * keep[..., None]
        errors[hook] = (grad_e[hook] * (patch[hook].e - clean[hook].e)).sum(-1) * keep
    return NodeEffects(features, errors, grad_f, grad_e, clean, patch)


def _mean_gradients(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], hooks: list[str], batch: PairBatch,
                    clean: dict[str, NodeState], patch: dict[str, NodeState], alphas: list[float],
                    metric: Metric) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    n, steps = len(batch), len(alphas)
    alpha = torch.tensor(alphas, device=lm.device).repeat_interleave(n)[:, None, None]  # [steps*n, 1, 1]
    leaves: dict[str, tuple[Tensor, Tensor]] = {}
    for hook in hooks:
        c, p = clean[hook], patch[hook]
        f = (c.f.repeat(steps, 1, 1) + alpha * (p.f - c.f).repeat(steps, 1, 1)).requires_grad_(True)
        e = (c.e.repeat(steps, 1, 1) + alpha * (p.e - c.e).repeat(steps, 1, 1)).requires_grad_(True)
        leaves[hook] = (f, e)

    def splice(hook: str) -> Callable[[Tensor], Tensor]:
        sink = clean[hook].sink.repeat(steps, 1)[..., None]

        def fn(a: Tensor) -> Tensor:
            f, e = leaves[hook]
            value = dictionaries[hook].decode(f) + e
            return torch.where(sink, a, (value + (a.float() - a.float().detach())).to(a.dtype))
        return fn

    repeated = batch.select(torch.arange(n, device=lm.device).repeat(steps))
    ids = repeated.clean_ids
    with torch.enable_grad(), intervene(lm.model, {hook: splice(hook) for hook in hooks}):
        values = metric(metric_input(lm, ids, metric), repeated)  # [steps*n]
        values.sum().backward()
    grad_f = {hook: leaves[hook][0].grad.view(steps, n, *leaves[hook][0].shape[1:]).mean(0) for hook in hooks}
    grad_e = {hook: leaves[hook][1].grad.view(steps, n, *leaves[hook][1].shape[1:]).mean(0) for hook in hooks}
    return grad_f, grad_e


def prompt_batches(lm: LoadedModel, texts: list[str], batch_size: int = 32) -> list[PairBatch]:
    """No-pair batches of plain prompts (start token first), grouped by token length, without answers."""
    from saescope.model.likelihood import document_start_id, encode_texts

    by_length: dict[int, list[list[int]]] = {}
    for ids in encode_texts(lm, texts, prefix=[document_start_id(lm)]):
        by_length.setdefault(len(ids), []).append(ids)
    return [PairBatch(torch.tensor(rows[i:i + batch_size]), torch.zeros(len(rows[i:i + batch_size]), dtype=torch.long))
            for rows in by_length.values() for i in range(0, len(rows), batch_size)]


def mean_feature_effects(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], texts: list[str], metric: Metric,
                         batch_size: int = 32) -> dict[str, Tensor]:
    """``{hook: [d_sae]}``: each feature's AtP effect on ``metric`` of zero-ablating it at every position,
    averaged over ``texts`` (no pairs). Used by SHIFT and ``debias --method circuit``."""
    sums: dict[str, Tensor] = {}
    for batch in prompt_batches(lm, texts, batch_size):
        effects = attribute(lm, dictionaries, batch, metric, method="atp")
        for hook, f in effects.features.items():
            sums[hook] = sums.get(hook, 0) + f.sum((0, 1)).cpu()
    return {hook: value / len(texts) for hook, value in sums.items()}
