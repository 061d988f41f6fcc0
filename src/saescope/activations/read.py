"""Attention sinks, and reading one hook point's activations (the one ``forward_until`` + sink-mask step).

A sink is position 0 of every window, plus any token whose norm exceeds ``SINK_NORM_FACTOR`` x its
window's median; in SmolLM2 a sink has norm ~25,000 against a median of ~140, so 0.1 % of tokens
would carry most of the variance. saescope never trains on, measures, or replaces them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saescope.model.hooks import forward_until
from saescope.model.loading import LoadedModel

SINK_NORM_FACTOR = 10.0


def sink_mask(acts: Tensor, factor: float = SINK_NORM_FACTOR) -> Tensor:
    """``[batch, seq]`` bool: True at attention-sink tokens (position 0, and norm > factor x the window's median).

    Example::

        keep = ~sink_mask(acts)          # acts [batch, seq, d]; train and measure on acts[keep]
    """
    norms = acts.float().norm(dim=-1)  # [batch, seq]
    mask = torch.zeros_like(norms, dtype=torch.bool)
    if norms.shape[1] > 1:
        mask = norms > factor * norms[:, 1:].median(dim=1, keepdim=True).values  # per window: batch-independent
    mask[:, 0] = True
    return mask


@torch.no_grad()
def hook_activations(lm: LoadedModel, hook: str, input_ids: Tensor,
                     attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(acts [batch, seq, d], keep [batch, seq])`` at ``hook``: the forward stops after the hook's
    layer; ``keep`` is False at attention sinks (and at padding when ``attention_mask`` is given).

    Example::

        acts, keep = hook_activations(lm, "blocks.12.hook_resid_post", ids)
        acts[keep]                        # [n_kept, d_model]
    """
    return hooks_activations(lm, [hook], input_ids, attention_mask)[hook]


@torch.no_grad()
def hooks_activations(lm: LoadedModel, hooks: list[str], input_ids: Tensor,
                      attention_mask: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """``hook_activations`` for several hook points from one forward pass (stopped after the last one);
    each hook point gets its own sink mask.

    Example::

        acts = hooks_activations(lm, ["blocks.2.hook_resid_post", "blocks.6.hook_resid_post"], ids)
        x, keep = acts["blocks.6.hook_resid_post"]
    """
    captured = forward_until(lm.model, list(hooks), input_ids, attention_mask)
    result = {}
    for hook in hooks:
        acts = captured[hook]
        keep = ~sink_mask(acts)
        if attention_mask is not None:
            keep &= attention_mask.bool()
        result[hook] = (acts, keep)
    return result
