"""Intervening from an attribution graph: scale transcoder features where the graph found them, in the real
model, and compare the next-token predictions (the app's "ablate pinned nodes").

A feature node ``{layer}_{feature}_{position}`` (circuit-tracer's id) adds ``a * W_dec[feature]`` to block
``layer``'s MLP output at ``position``, where ``a`` is the transcoder's activation from that block's MLP
input. Scaling the node by ``s`` adds ``(s - 1) * a * W_dec[feature]`` there. ``a`` is read in the same
forward pass, so ablating an earlier feature also changes the later ones. It is the ``scale`` edit of
``FeatureSteering`` on the layer's transcoder at that position (read at ``hook_mlp_in``, written at
``hook_mlp_out``): an intervention on the model, not on the linearised graph, so the answer includes
everything the graph leaves out: attention changes and the MLP error terms.

Example::

    result = scale_graph_features(lm, load_transcoders("tc"), graph.tokens, ["3_17_1"], scale=0.0)
    result["before"][:3], result["after"][:3]     # top next tokens with probabilities
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.hooks import applied
from saescope.model.loading import LoadedModel
from saescope.sae.transcoders import TranscoderSet
from saescope.steering import FeatureEdit, FeatureSteering, Interventions

_FEATURE_NODE = re.compile(r"^(\d+)_(\d+)_(\d+)$")
MAX_NODES = 64  # the most feature nodes one intervention scales


def feature_node(node_id: str, n_layers: int, n_pos: int, width: int) -> tuple[int, int, int]:
    """``(layer, feature, position)`` of a feature node id; a one-line error for anything else."""
    match = _FEATURE_NODE.match(node_id)
    if match is None:
        raise SaescopeError(f"{node_id!r} is not a feature node (expected layer_feature_position, e.g. 3_17_1)")
    layer, feature, position = (int(g) for g in match.groups())
    if layer >= n_layers or feature >= width or position >= n_pos:
        raise SaescopeError(f"feature node {node_id!r} is outside the graph ({n_layers} layers, {width} features, "
                            f"{n_pos} positions)")
    return layer, feature, position


def _top(probs: Tensor, lm: LoadedModel, k: int) -> list[dict[str, Any]]:
    values, ids = probs.topk(k)
    return [{"token": lm.tokenizer.decode([int(i)]), "id": int(i), "prob": float(v)} for v, i in zip(values, ids)]


@torch.inference_mode()
def scale_graph_features(lm: LoadedModel, transcoders: TranscoderSet, tokens: list[int], nodes: list[str],
                         scale: float = 0.0, top: int = 10, watch: list[int] | None = None) -> dict[str, Any]:
    """The next-token distribution after ``tokens``, plain and with every feature node in ``nodes`` scaled by
    ``scale`` (0 ablates it): the ``top`` tokens of each, and the probabilities of the ``watch`` token ids."""
    if not nodes:
        raise SaescopeError("no feature node to scale: pin at least one feature")
    if len(nodes) > MAX_NODES:
        raise SaescopeError(f"at most {MAX_NODES} feature nodes per intervention, got {len(nodes)}")
    layers = transcoders.layers
    width = transcoders[layers[0]].d_sae
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)  # (layer, position) -> features
    for node in dict.fromkeys(nodes):
        layer, feature, position = feature_node(node, len(layers), len(tokens), width)
        groups[(layer, position)].append(feature)
    scaling = Interventions([FeatureSteering(transcoders[layer], [FeatureEdit(f, "scale", scale) for f in features],
                                             positions=[position])
                             for (layer, position), features in groups.items()])
    ids = torch.tensor([tokens], device=lm.device)
    plain = lm.model(input_ids=ids).logits[0, -1].float().softmax(-1)
    with applied(scaling, lm):
        scaled = lm.model(input_ids=ids).logits[0, -1].float().softmax(-1)
    watched = list(watch or [])
    return {"scale": scale, "nodes": list(dict.fromkeys(nodes)), "before": _top(plain, lm, top), "after": _top(scaled, lm, top),
            "watch": [{"token": lm.tokenizer.decode([t]), "id": t, "before": float(plain[t]), "after": float(scaled[t])}
                      for t in watched]}
