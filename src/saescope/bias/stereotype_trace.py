"""Where an occupation's stereotyped gender is written: each layer's MLP output at the occupation token,
mean-ablated, one layer at a time.

On occupation prompts (female- and male-stereotyped occupations x templates; training data), the
**stereotype gap** is the mean of ``log P(she)/P(he)`` after the female-stereotyped prompts minus the
mean after the male-stereotyped ones. For each layer, the MLP output at the occupation's last token
is replaced by its mean over all the prompts (the occupation's own contribution goes, the average one
stays), and the share of the gap that disappears is that MLP's **effect** (1: the whole stereotype
came through it; it can exceed 1 or be negative, as total effects can). DAMA (Limisiewicz et al.
2024) and ROME locate with causal tracing (noise on the subject, restore one state); mean ablation
asks the same question of the stereotype itself, needs no noise scale, and costs one batched pass per
layer through the one hook layer.

Example::

    trace = stereotype_trace(lm, ["midwife", "nanny"], ["pilot", "welder"], ["The {occupation} said that"])
    trace.effects            # [n_layers]
    trace.top_layers(2)      # e.g. [3, 5]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saescope.bias.scoring import pronoun_ids
from saescope.errors import SaescopeError
from saescope.model.hooks import capture, intervene
from saescope.model.likelihood import encode_texts, last_token_logits
from saescope.model.loading import LoadedModel, pad_rows


@dataclass
class StereotypeTrace:
    """The stereotype gap of the clean model and, per layer, the share of it its MLP output carries."""

    gap: float
    effects: Tensor  # [n_layers]

    def top_layers(self, n: int, first: int = 0) -> list[int]:
        """The ``n`` layers from ``first`` on of largest effect, in layer order."""
        if not 1 <= n <= len(self.effects) - first:
            raise SaescopeError(f"cannot pick {n} of the {len(self.effects) - first} layers from layer {first} on")
        return sorted(first + int(i) for i in self.effects[first:].topk(n).indices)

    def to_dict(self) -> dict[str, object]:
        return {"gap": self.gap, "effects": [round(float(e), 4) for e in self.effects]}


def occupation_rows(lm: LoadedModel, occupations: list[str], templates: list[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids of every ``template x occupation`` prompt and the position of the occupation's last
    token in each (the way next-token queries read text: no document-start token)."""
    prompts = [(t.split("{occupation}")[0] + o, t.format(occupation=o)) for o in occupations for t in templates]
    rows = encode_texts(lm, [full for _, full in prompts])
    positions = [len(ids) - 1 for ids in encode_texts(lm, [prefix for prefix, _ in prompts])]
    return rows, positions


@torch.inference_mode()
def stereotype_trace(lm: LoadedModel, female: list[str], male: list[str], templates: list[str]) -> StereotypeTrace:
    """Mean-ablation effects of every layer's MLP output on the stereotype gap (module docstring)."""
    if not female or not male:
        raise SaescopeError("the stereotype trace needs female- and male-stereotyped occupations")
    if not templates or not all("{occupation}" in t for t in templates):
        raise SaescopeError("the stereotype trace needs templates that each contain {occupation}")
    rows, positions = occupation_rows(lm, female + male, templates)
    is_female = torch.tensor([True] * (len(female) * len(templates)) + [False] * (len(male) * len(templates)))
    ids, mask = pad_rows(rows, lm.pad_id, lm.device)
    at = (torch.arange(len(rows), device=lm.device), torch.tensor(positions, device=lm.device))
    she, he = pronoun_ids(lm)
    hooks = [f"blocks.{layer}.hook_mlp_out" for layer in range(lm.n_layers)]

    def gap_of(logits: Tensor) -> float:
        logp = logits.float().log_softmax(-1)
        odds = (logp[:, she].logsumexp(-1) - logp[:, he].logsumexp(-1)).cpu()
        return float(odds[is_female].mean() - odds[~is_female].mean())

    with capture(lm.model, hooks) as acts:
        clean = gap_of(last_token_logits(lm, ids, mask))
    means = {hook: acts[hook][at].float().mean(0) for hook in hooks}
    effects = []
    for hook in hooks:
        def ablate(x: Tensor, mean: Tensor = means[hook]) -> Tensor:
            x = x.clone()
            x[at] = mean.to(x.dtype)
            return x
        with intervene(lm.model, {hook: ablate}):
            effects.append(1 - gap_of(last_token_logits(lm, ids, mask)) / clean if clean else 0.0)
    return StereotypeTrace(clean, torch.tensor(effects))
