"""FT-L, the constrained fine-tuning baseline of the ROME paper: Adam on one layer's MLP output
projection weight alone, minimising the target's negative log-likelihood after the prompt (alone, as
in the ROME code's FT-L; ``prefixes`` adds ROME's corpus prefixes), every entry of the change kept in
``[-epsilon, epsilon]`` (an L∞ ball) after each step; it stops early, as ROME's value optimisation
does, once the target's loss is under 0.05. The model is restored before returning; the change comes
back as a ``WeightEdit`` (``u = I``, ``v = ΔWᵀ``) that applies and restores like a ROME edit.

Example::

    edit = ft_l_edit(lm, EditRequest("Name: {}. Gender:", "Ben", " Female"), layer=9)
"""

from __future__ import annotations

import torch
from torch import Tensor

from saescope.editing.config import FtConfig
from saescope.editing.request import EditRequest
from saescope.editing.rome import context_prefixes, edit_module
from saescope.editing.values import STOP_NLL, request_rows, subject_keys
from saescope.editing.weight_edit import WeightEdit
from saescope.model.likelihood import logits_at, pad_id
from saescope.model.loading import LoadedModel, pad_rows


def ft_l_edit(lm: LoadedModel, request: EditRequest, layer: int | FtConfig, epsilon: float = 5e-4, steps: int = 25,
              lr: float = 5e-4, prefixes: int = 0, seed: int = 0) -> WeightEdit:
    """Fine-tune ``layer``'s MLP output projection so ``request.target`` follows the prompt (see above).
    ``layer`` may be an ``FtConfig`` holding every setting."""
    config = layer if isinstance(layer, FtConfig) else FtConfig(layer, epsilon, steps, lr, prefixes, seed)
    layer, epsilon, steps, lr = config.layer, config.epsilon, config.steps, config.lr
    prefixes, seed = config.prefixes, config.seed
    module = edit_module(lm, layer)
    weight = dict(lm.model.named_modules())[module].weight
    item = request_rows(lm, request, context_prefixes(prefixes, seed))
    rows = item.rows[:-1]  # the essence row is ROME's regulariser, not a training example
    ids, mask = pad_rows(rows, pad_id(lm), lm.device)
    row, at, wanted = (torch.tensor(c, device=lm.device) for c in zip(*item.labels))
    original = weight.detach().clone()
    optimiser = torch.optim.Adam([weight], lr=lr)
    history = []
    try:
        weight.requires_grad_(True)
        for _ in range(steps):
            with torch.enable_grad():
                logp = logits_at(lm, ids, mask, row, at).log_softmax(-1)
                nll = -logp.gather(1, wanted[:, None]).mean()
                history.append(float(nll.detach()))
                if history[-1] < STOP_NLL:  # the same stopping rule as ROME's value optimisation
                    break
                optimiser.zero_grad()
                nll.backward()
                optimiser.step()
            with torch.no_grad():
                weight.copy_(original + (weight - original).clamp(-epsilon, epsilon))
        change = (weight.detach() - original).float()
    finally:
        weight.requires_grad_(False)
        with torch.no_grad():
            weight.copy_(original)
    if type(dict(lm.model.named_modules())[module]).__name__ == "Conv1D":
        change = change.T  # stored [in, out]: WeightEdit works in [out, in]
    keys = subject_keys(lm, layer, rows, item.subject_at[:-1])
    delta = change.cpu() @ keys.mean(0)
    return WeightEdit(module, layer, torch.eye(len(change)), change.T.cpu().contiguous(), request, _detached(delta),
                      "ft-l", {"epsilon": epsilon, "steps": steps, "target_nll": history, "model": lm.name,
                               "delta_norm": float(delta.norm())})


def _detached(tensor: Tensor) -> Tensor:
    return tensor.detach().float().contiguous()
