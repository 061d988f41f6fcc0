"""``erase``: **SAE-gated readout erasure** at one layer (``scrub`` extends it to every layer from block 0).

Later layers read an occupation's stereotyped gender from the occupation token's residual (activation
patching: the token carries it up to layer ~24, the last position picks it up at layers 24-28). We
erase, at one layer L, the direction that read-out uses: the mean gradient of log P(she)/P(he) with
respect to the occupation token's residual over the training occupation prompts, anchored at the
corpus mean (``SubspaceErasure``). It is *not* erased on tokens that are gendered by definition
(mother, king, Emma, she): those are detected by the SAE's narrow definitional-gender features
(``gender_features.gate_features``, a ``FeatureGate``), so real gender information survives.
Candidates: L in {SAE layer, +2, +4, +6} (or ``layers``); ``features`` gives the gate features.
"""

from __future__ import annotations

import torch

from saescope.activations.read import hooks_activations
from saescope.bias.data import SelectionPrompts
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.gender_features import gate_features
from saescope.bias.scoring import pronoun_ids
from saescope.bias.stereotype_trace import occupation_rows
from saescope.corpus import first_windows
from saescope.errors import SaescopeError
from saescope.model.hooks import capture_with_grad, resolve_hook
from saescope.model.likelihood import last_token_logits, pad_id
from saescope.model.loading import LoadedModel, pad_rows
from saescope.steering import FeatureGate, SubspaceErasure

ERASE_FRACTIONS = (1.0,)


def readout_gradients(lm: LoadedModel, hooks: list[str], selection: SelectionPrompts,
                      batch_size: int = 32, at: str = "occupation") -> dict[str, torch.Tensor]:
    """Per hook point, ``[prompts, d_model]``: the gradient of log P(she)/P(he) with respect to the
    occupation token's residual (``at="last"``: the last token's, where the pronoun is predicted), for
    every training occupation prompt. One batched backward pass gives it at every hook point."""
    if at not in ("occupation", "last"):
        raise SaescopeError(f"the read-out is taken at 'occupation' or 'last', not {at!r}")
    she, he = pronoun_ids(lm)
    rows, positions = occupation_rows(lm, selection.female_occupations + selection.male_occupations,
                                      selection.templates)
    parts: dict[str, list[torch.Tensor]] = {hook: [] for hook in hooks}
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_rows(rows[start:start + batch_size], pad_id(lm), lm.device)
        where = (torch.tensor(positions[start:start + batch_size], device=lm.device) if at == "occupation"
                 else mask.sum(1) - 1)
        with capture_with_grad(lm.model, hooks) as acts:
            logp = last_token_logits(lm, ids, mask).log_softmax(-1)
            (logp[:, she].logsumexp(-1) - logp[:, he].logsumexp(-1)).sum().backward()
        for hook in hooks:
            parts[hook].append(acts[hook].grad[torch.arange(len(ids), device=lm.device), where].float().cpu())
    return {hook: torch.cat(chunks) for hook, chunks in parts.items()}


def readout_directions(lm: LoadedModel, hooks: list[str], selection: SelectionPrompts,
                       batch_size: int = 32, at: str = "occupation") -> dict[str, torch.Tensor]:
    """Per hook point, the unit mean of ``readout_gradients``: the direction later layers read the
    stereotype from (``at="last"``: the direction the pronoun is read from at the last token)."""
    means = {hook: grads.sum(0) for hook, grads in readout_gradients(lm, hooks, selection, batch_size, at).items()}
    return {hook: total / total.norm() for hook, total in means.items()}


def readout_direction(lm: LoadedModel, hook: str, selection: SelectionPrompts) -> torch.Tensor:
    """``readout_directions`` at one hook point."""
    return readout_directions(lm, [hook], selection)[hook]


def erase_layers(lm: LoadedModel, hook: str, layers: list[int] | None = None) -> list[str]:
    """Candidate erasure hook points: ``layers``, or the SAE's layer and a few after it (the gate,
    at the SAE's layer, must run first)."""
    point = resolve_hook(lm.model, hook)
    if point.kind != "resid_post" or point.layer is None:
        return [hook]
    chosen = layers if layers is not None else range(point.layer, min(point.layer + 7, lm.n_layers), 2)
    early = [layer for layer in chosen if layer < point.layer]
    if early:
        raise SaescopeError(f"erase layers {early} come before the SAE's layer {point.layer}: the gate must run first")
    return [resolve_hook(lm.model, f"blocks.{layer}.hook_resid_post").name for layer in chosen]


def corpus_means(lm: LoadedModel, hooks: list[str], tokens: int = 8192) -> dict[str, torch.Tensor]:
    """The mean residual (attention sinks excluded) at each hook point over training text, one pass."""
    windows = first_windows(lm.tokenizer, tokens, "train").to(lm.device)
    totals, counts = {h: torch.zeros(lm.d_model) for h in hooks}, dict.fromkeys(hooks, 0)
    with torch.inference_mode():
        for start in range(0, len(windows), 16):
            for hook, (acts, keep) in hooks_activations(lm, hooks, windows[start:start + 16]).items():
                kept = acts[keep].float()
                totals[hook] += kept.sum(0).cpu()
                counts[hook] += len(kept)
    return {hook: totals[hook] / counts[hook] for hook in hooks}


def definitional_gate(ctx: MethodContext) -> tuple[list[int], FeatureGate]:
    """The gate features (``features``, or the definitional-gender gate of the ranked table) and their gate."""
    gate_ids = gate_features(ctx.table) if ctx.features == "auto" else list(ctx.features)
    if not gate_ids:
        raise SaescopeError("no definitional-gender gate feature found on the selection prompts: "
                            "give the features explicitly")
    return gate_ids, FeatureGate(ctx.sae, gate_ids, ctx.hook)


@register_method("erase")
def erase(ctx: MethodContext) -> list[Candidate]:
    """One gated erasure per candidate layer (and ``strengths``: erasure fractions, default 1)."""
    gate_ids, gate = definitional_gate(ctx)
    layers = erase_layers(ctx.lm, ctx.hook, ctx.config.layers)
    directions, means = readout_directions(ctx.lm, layers, ctx.selection), corpus_means(ctx.lm, layers)
    return [(f"{layer} x{fraction:g}", gate_ids, SubspaceErasure(layer, directions[layer], means[layer], fraction,
                                                                 name="gender-readout", gate=gate))
            for layer in layers for fraction in ctx.config.strengths or ERASE_FRACTIONS]
