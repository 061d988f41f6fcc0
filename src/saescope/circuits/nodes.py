"""The nodes of a circuit: each SAE's features and its error term at each hook point and position.

With a dictionary ``D`` (an SAE, or ``IdentityDictionary`` for the model's own basis) spliced in at a
hook point, the activation is ``x = D.decode(f) + e`` with ``f = D.encode(x)`` and the error term
``e = x - D.decode(f)``, so the forward pass is unchanged. The nodes at that hook point are the
``d_sae`` features and the one error node per position. Attention-sink positions (the document-start
token, and any token with a sink's norm, ``activations.read.sink_mask``) hold no nodes: they pass
through untouched in every intervention.

Example::

    states = node_states(lm, saes, ids)            # {hook: NodeState(f [n, seq, d_sae], e [n, seq, d], sink)}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from saescope.activations.read import sink_mask
from saescope.errors import SaescopeError
from saescope.model.hooks import execution_order, forward_until, resolve_hook
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE


class IdentityDictionary(nn.Module):
    """The model's own basis as a "dictionary": features are the activation's coordinates, the error is 0.

    Used for component-level (neuron) circuits, the baseline of the Sparse Feature Circuits paper.
    """

    def __init__(self, d_model: int, hook_name: str | None = None) -> None:
        super().__init__()
        self.d_in = self.d_sae = d_model
        self.hook_name = hook_name

    def encode(self, x: Tensor) -> Tensor:
        return x.float()

    def decode(self, f: Tensor) -> Tensor:
        return f


Dictionary = SAE | IdentityDictionary


@dataclass
class NodeState:
    """Feature values ``f`` [n, seq, d_sae], error terms ``e`` [n, seq, d] and ``sink`` [n, seq] (no nodes there)."""

    f: Tensor
    e: Tensor
    sink: Tensor


def ordered_hooks(lm: LoadedModel, dictionaries: Mapping[str, Dictionary]) -> list[str]:
    """The hook points in the order the forward pass reaches them; each dictionary checked against the model."""
    points = []
    for hook, dictionary in dictionaries.items():
        point = resolve_hook(lm.model, hook)
        if dictionary.d_in != lm.d_model:
            raise SaescopeError(f"the SAE for {hook} takes inputs of width {dictionary.d_in}, but the model's "
                                f"activations there have width {lm.d_model}: use an SAE trained on this model")
        points.append(point)
    return [p.name for p in sorted(points, key=execution_order)]


def split(dictionary: Dictionary, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(f, e)`` with ``dictionary.decode(f) + e == x`` (in float32)."""
    f = dictionary.encode(x.float())
    return f, x.float() - dictionary.decode(f)


@torch.no_grad()
def node_states(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], ids: Tensor) -> dict[str, NodeState]:
    """Every hook point's node values on ``ids`` [n, seq] from one forward pass (stopped after the last hook)."""
    hooks = ordered_hooks(lm, dictionaries)
    acts = forward_until(lm.model, hooks, ids.to(lm.device))
    states = {}
    for hook in hooks:
        f, e = split(dictionaries[hook], acts[hook])
        states[hook] = NodeState(f, e, sink_mask(acts[hook]))
    return states


def zero_states(states: Mapping[str, NodeState]) -> dict[str, NodeState]:
    """The zero-ablation patch of no-pair mode: every feature and error term 0 (sinks as in ``states``)."""
    return {hook: NodeState(torch.zeros_like(s.f), torch.zeros_like(s.e), s.sink) for hook, s in states.items()}
