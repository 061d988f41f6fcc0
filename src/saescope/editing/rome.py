"""ROME (Meng et al. 2022): a rank-one edit of one MLP output projection so that a prompt about a
subject continues with a new target.

1. **Key** ``k*``: the projection's input (``blocks.L.hook_mlp_post``) at the subject's last token,
   averaged over the prompt alone and behind ``prefixes`` random corpus snippets.
2. **Value**: a change ``δ`` of the projection's output at that token, found by Adam so that the
   target follows the prompt in every context, with ``kl_weight`` x KL(edited || original) on
   "{subject} is a" (the subject's essence) and ``weight_decay`` x ``||δ|| / ||v||²`` (as the ROME code); ``||δ||`` is
   kept within ``clamp_norm`` x ``||v||``. All through the one hook layer (a hook on the projection).
3. **Update** ``W += u vᵀ`` with ``v = C⁻¹k* / ||C⁻¹k*||`` (``C = E[k kᵀ]``, ``statistics``) and
   ``u = δ / (v·k*)`` (``r-rome``: the averaged key is mapped to its new value exactly), or, as the
   original code does (``rome``), ``u = δ / (v·k₀)`` with ``k₀`` the key of the prompt without prefix:
   the update's direction and its scale then come from different keys, which is what makes
   repeated original-ROME edits collapse a model (Gupta et al. 2024).

Example::

    edit = rome_edit(lm, EditRequest("Name: {}. Gender:", "Ben", " Female"), RomeConfig(layer=6))
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.corpus import load_corpus
from saescope.editing.config import RomeConfig
from saescope.editing.request import EditRequest
from saescope.editing.statistics import key_second_moment
from saescope.editing.values import optimise_values, request_rows, subject_keys
from saescope.editing.weight_edit import WeightEdit
from saescope.errors import SaescopeError
from saescope.model.arch import down_projection_path, layer_list_path
from saescope.model.loading import LoadedModel


def context_prefixes(count: int, seed: int = 0) -> list[str]:
    """``""`` and ``count`` snippets of 3-10 words from the embedded corpus (training split)."""
    rng = random.Random(seed)
    words = [w for doc in load_corpus("embedded", "train")[:200] for w in doc.text.split()]
    out = [""]
    for _ in range(count):
        start, length = rng.randrange(0, max(1, len(words) - 12)), rng.randint(3, 10)
        out.append(" ".join(words[start:start + length]).rstrip(".") + ". ")
    return out


def edit_module(lm: LoadedModel, layer: int) -> str:
    """The MLP output projection of ``layer`` (e.g. ``model.layers.6.mlp.down_proj``), checked."""
    if not 0 <= layer < lm.n_layers:
        raise SaescopeError(f"layer {layer} is out of range: {lm.name} has {lm.n_layers} layers (0-{lm.n_layers - 1})")
    return down_projection_path(dict(lm.model.named_modules()), f"{layer_list_path(lm.model)}.{layer}")


def rome_edit(lm: LoadedModel, request: EditRequest, config: RomeConfig | None = None,
              progress: bool = False) -> WeightEdit:
    """The ROME edit of ``request`` (see the module docstring); the model is left unchanged."""
    return rome_edits(lm, [request], config, progress)[0]


def rome_edits(lm: LoadedModel, requests: list[EditRequest], config: RomeConfig | None = None,
               progress: bool = False, batch_size: int = 16) -> list[WeightEdit]:
    """One independent ROME edit per request, the value optimisations run ``batch_size`` at a time
    (``editing.values``); the layer is ``config.layer`` or the MLP trace's peak for the first request."""
    config = config or RomeConfig()
    layer = config.layer if config.layer is not None else _traced_layer(lm, requests[0])
    module = edit_module(lm, layer)
    prefixes = context_prefixes(config.prefixes, config.seed)
    inverse = key_inverse(lm, layer, config.stats_tokens, progress)
    edits = []
    for start in tqdm(range(0, len(requests), batch_size), desc="ROME edits", disable=not progress or
                      len(requests) <= batch_size):
        chunk = requests[start:start + batch_size]
        deltas, v_init, history = optimise_values(lm, module, chunk, prefixes, config, progress and len(requests) == 1)
        for request, delta, value, losses in zip(chunk, deltas, v_init, history):
            info = {"target_nll": losses, "steps": len(losses), "v_norm": float(value.norm())}
            edits.append(value_edit(lm, request, delta, layer, config, prefixes, info, inverse))
    return edits


def key_inverse(lm: LoadedModel, layer: int, stats_tokens: int, progress: bool = False) -> Tensor:
    """``(C + λI)⁻¹`` in float64, ``C = E[k kᵀ]`` of ``layer`` (cached on disk), ``λ`` = 1e-4 x mean(diag C)."""
    moment = key_second_moment(lm, layer, stats_tokens, progress=progress).double()
    return torch.linalg.inv(moment + 1e-4 * moment.diagonal().mean() * torch.eye(len(moment), dtype=torch.float64))


@dataclass
class SubjectUpdate:
    """Where a rank-one edit for ``request`` writes: ``W += (δ / denominator) directionᵀ`` adds ``δ`` to
    the MLP output at the subject's (averaged) key; any ``δ`` can be plugged in (``edit``)."""

    module: str
    layer: int
    request: EditRequest
    direction: Tensor  # C⁻¹k* / ||C⁻¹k*||, [d_ff]
    denominator: float  # direction · k* (r-rome) or direction · k₀ (rome)
    method: str
    info: dict

    def edit(self, delta: Tensor, info: dict | None = None) -> WeightEdit:
        """The ``WeightEdit`` that adds ``delta`` ([d_model]) at the subject."""
        delta = delta.detach().float().cpu()
        details = self.info | dict(info or {}) | {"delta_norm": float(delta.norm())}
        return WeightEdit(self.module, self.layer, delta / self.denominator, self.direction, self.request, delta,
                          self.method, details)


def subject_update(lm: LoadedModel, request: EditRequest, layer: int, config: RomeConfig,
                   prefixes: list[str] | None = None, inverse: Tensor | None = None) -> SubjectUpdate:
    """The update direction and scale of ``request``'s subject at ``layer`` (one short forward pass)."""
    module = edit_module(lm, layer)
    prefixes = prefixes if prefixes is not None else context_prefixes(config.prefixes, config.seed)
    item = request_rows(lm, request, prefixes)
    keys = subject_keys(lm, layer, item.rows[:-1], item.subject_at[:-1])  # [contexts, d_ff]
    k_star, k_zero = keys.mean(0), keys[0]
    inverse = inverse if inverse is not None else key_inverse(lm, layer, config.stats_tokens)
    direction = (inverse @ k_star.double()).float()
    direction = direction / direction.norm()
    denominator = float(direction @ (k_star if config.method == "r-rome" else k_zero))
    if abs(denominator) < 1e-8:
        raise SaescopeError("the subject's key is orthogonal to the update direction: try another layer")
    info = {"stats_tokens": config.stats_tokens, "prefixes": len(prefixes), "model": lm.name}
    return SubjectUpdate(module, layer, request, direction, denominator, config.method, info)


def value_edit(lm: LoadedModel, request: EditRequest, delta: Tensor, layer: int, config: RomeConfig,
               prefixes: list[str] | None = None, info: dict | None = None,
               inverse: Tensor | None = None) -> WeightEdit:
    """The rank-one update that adds ``delta`` to ``layer``'s MLP output at ``request``'s subject
    (``delta`` may come from ROME's optimisation or from elsewhere, e.g. a constructed gender vector)."""
    return subject_update(lm, request, layer, config, prefixes, inverse).edit(delta, info)


def _traced_layer(lm: LoadedModel, request: EditRequest) -> int:
    from saescope.editing.tracing import causal_trace

    return causal_trace(lm, request.text, request.subject, kinds=("mlp",)).best_layer("mlp")
