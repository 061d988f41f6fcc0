"""Logit effects: which vocabulary tokens a feature's decoder direction promotes and suppresses.

effect = (W_dec[f] ⊙ γ) @ W_Uᵀ, with γ the final norm's scale and W_U the unembedding (the direct
path from the residual stream to the logits, ignoring the norm's data-dependent rescaling).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saescope.models import LoadedModel
from saescope.sae import SAE

_FINAL_NORMS = ("model.norm", "model.language_model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm",
                "model.decoder.final_layer_norm")


@torch.no_grad()
def logit_effects(lm: LoadedModel, sae: SAE, n: int = 10, chunk: int = 256,
                  features: list[int] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-``n`` promoted and suppressed tokens per feature: ``(up_values, up_ids, down_values, down_ids)``,
    each ``[d_sae, n]`` (or ``[len(features), n]`` for a subset).

    Example::

        up, up_ids, down, down_ids = logit_effects(lm, sae)
        lm.tokenizer.decode(up_ids[123, :1])
    """
    unembed = lm.model.get_output_embeddings().weight.float()  # [vocab, d_model]
    gamma = _final_norm_scale(lm.model, unembed.shape[1]).to(unembed.device)
    directions = sae.decoder_directions().to(unembed.device)
    if features is not None:
        directions = directions[torch.as_tensor(features, dtype=torch.long, device=directions.device)]
    results = []
    for start in range(0, len(directions), chunk):
        effects = (directions[start:start + chunk] * gamma) @ unembed.T  # [chunk, vocab]
        results.append((*effects.topk(n, dim=-1), *(-effects).topk(n, dim=-1)))
    up, up_ids, down, down_ids = (torch.cat(parts) for parts in zip(*results))
    return up.cpu(), up_ids.cpu(), -down.cpu(), down_ids.cpu()


def _final_norm_scale(model: nn.Module, d_model: int) -> Tensor:
    modules = dict(model.named_modules())
    for name in _FINAL_NORMS:
        weight = getattr(modules.get(name), "weight", None)
        if weight is not None and weight.shape == (d_model,):
            scale = weight.float()
            if "Gemma" in type(model).__name__:  # Gemma's RMSNorm multiplies by (1 + weight)
                scale = scale + 1.0
            return scale
    return torch.ones(d_model)
