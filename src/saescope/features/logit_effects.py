"""Logit effects: which vocabulary tokens a feature's decoder direction promotes and suppresses.

effect = (W_dec[f] ⊙ γ) @ W_Uᵀ, with γ the final norm's scale and W_U the unembedding (the direct
path from the residual stream to the logits, ignoring the norm's data-dependent rescaling).
"""

from __future__ import annotations

import torch
from torch import Tensor

from saescope.model.arch import final_norm_scale
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE


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
    gamma = final_norm_scale(lm.model, unembed.shape[1]).to(unembed.device)
    directions = sae.decoder_directions().to(unembed.device)
    if features is not None:
        directions = directions[torch.as_tensor(features, dtype=torch.long, device=directions.device)]
    results = []
    for start in range(0, len(directions), chunk):
        effects = (directions[start:start + chunk] * gamma) @ unembed.T  # [chunk, vocab]
        results.append((*effects.topk(n, dim=-1), *(-effects).topk(n, dim=-1)))
    up, up_ids, down, down_ids = (torch.cat(parts) for parts in zip(*results))
    return up.cpu(), up_ids.cpu(), -down.cpu(), down_ids.cpu()
