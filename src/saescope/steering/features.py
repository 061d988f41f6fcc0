"""Steering with SAE features at one hook point: ``FeatureEdit`` values, applied by ``FeatureSteering``.

Operations, with the same meaning everywhere in saescope (``FEATURE_OPS``):
- ``add``: add ``value`` x the feature's unit decoder direction (optionally x the feature's max
  activation in a features RUN, ``scale="max_activation"``, or x the token's residual norm,
  ``scale="residual_norm"``);
- ``set``: set the activation to ``value`` (saved files of earlier versions call it ``clamp``);
- ``ablate``: set it to 0 (or to ``value``, e.g. its mean);
- ``scale``: multiply it by ``value``;
- ``cap``: clamp from above, ``min(a, value)``; smaller activations are untouched.
``set``/``ablate``/``scale``/``cap`` encode with the SAE and add only the change of the edited
features through the decoder, so the SAE's error term is kept and nothing but those features
changes: ``x' = x + Σ (a'_f - a_f) W_dec[f]``.

With a transcoder (``sae.transcoders``) the features are read from its input hook (the MLP's input) and the
change is written at its output hook (the MLP's output): ``mlp_out' = mlp_out + Σ (a'_f - a_f) W_dec[f]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.hooks import HookFn
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.steering.base import (
    Intervention,
    Interventions,
    Positions,
    SAEBinding,
    checked_sae,
    finite,
    register_intervention,
)

FEATURE_OPS = ("add", "set", "ablate", "scale", "cap")
_LEGACY_OPS = {"clamp": "set"}
SCALES = ("none", "max_activation", "residual_norm")


@dataclass
class FeatureEdit:
    """One feature edit: ``op`` in add | set | ablate | scale | cap, with its ``value``."""

    feature: int
    op: str = "add"
    value: float = 0.0

    def __post_init__(self) -> None:
        self.op = _LEGACY_OPS.get(self.op, self.op)
        if self.op not in FEATURE_OPS:
            raise SaescopeError(f"unknown feature operation {self.op!r}: use one of {', '.join(FEATURE_OPS)}")
        self.value = finite(self.value, f"the {self.op} value of feature {self.feature}")


@register_intervention("features")
class FeatureSteering(SAEBinding, Intervention):
    """Edit SAE features at one hook point (see the module docstring for the operations)."""

    def __init__(self, sae: SAE | str, edits: list[FeatureEdit], hook: str | None = None,
                 positions: list[int] | None = None, scale: str = "none",
                 max_activations: dict[int, float] | None = None) -> None:
        super().__init__(sae, hook)
        if not edits:
            raise SaescopeError("no feature edits given")
        if scale not in SCALES:
            raise SaescopeError(f"unknown scale {scale!r}: use one of {', '.join(SCALES)}")
        if scale == "max_activation" and not max_activations:
            raise SaescopeError("scale='max_activation' needs max_activations (from a features RUN)")
        for edit in edits:
            self.sae.check_feature(edit.feature)
        self.edits, self.positions, self.scale = edits, positions, scale
        self.max_activations = {int(k): float(v) for k, v in (max_activations or {}).items()}

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        sae = self.sae_on(lm)
        adds = [e for e in self.edits if e.op == "add"]
        sets = [e for e in self.edits if e.op != "add"]
        directions = sae.decoder_directions()
        add_vec = sum((e.value * self.max_activations.get(e.feature, 1.0) * directions[e.feature] for e in adds),
                      torch.zeros(sae.d_in, device=lm.device))
        feats = torch.tensor([e.feature for e in sets], device=lm.device, dtype=torch.long)
        ops = [e.op for e in sets]
        values = torch.tensor([e.value for e in sets], device=lm.device)
        w_dec = sae.W_dec[feats]  # [m, d_in]
        positions = Positions(self.positions)
        residual_scale = self.scale == "residual_norm"
        cast: dict[torch.dtype, Tensor] = {}

        output_hook = sae.cfg.metadata.get("output_hook")  # a transcoder: reads one hook, writes another
        seen: dict[str, Tensor] = {}

        def steer(acts: Tensor) -> Tensor:
            delta: Tensor | float = 0.0
            if adds:
                vec = cast.get(acts.dtype)
                if vec is None:
                    vec = cast[acts.dtype] = add_vec.to(acts.dtype)
                delta = vec * acts.norm(dim=-1, keepdim=True) if residual_scale else vec
            if sets:
                source = seen.pop("input") if output_hook else acts
                old = sae.encode(source.float())[..., feats]  # [batch, seq, m]
                new = torch.stack([edited(op, old[..., i], values[i]) for i, op in enumerate(ops)], -1)
                delta = delta + ((new - old) @ w_dec).to(acts.dtype)
            return positions.masked(acts, delta)

        if output_hook:
            return [(self.hook, lambda acts: seen.__setitem__("input", acts)), (output_hook, steer)]
        return [(self.hook, steer)]

    def scaled(self, multiplier: float) -> FeatureSteering:
        """The same steering with every ``add`` value multiplied by ``multiplier``."""
        edits = [FeatureEdit(e.feature, e.op, e.value * multiplier if e.op == "add" else e.value) for e in self.edits]
        return FeatureSteering(self.sae, edits, self.hook, self.positions, self.scale, self.max_activations)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "FeatureSteering", **self.sae_dict(), "positions": self.positions, "scale": self.scale,
                "max_activations": self.max_activations,
                "edits": [{"feature": e.feature, "op": e.op, "value": e.value} for e in self.edits]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> FeatureSteering:
        edits = [FeatureEdit(int(e["feature"]), e["op"], e["value"]) for e in data["edits"]]
        return cls(checked_sae(data, source), edits, data.get("hook"), data.get("positions"),
                   data.get("scale", "none"), {int(k): v for k, v in (data.get("max_activations") or {}).items()})


def edited(op: str, old: Tensor, value: Tensor) -> Tensor:
    """The new activations of one feature under ``op`` (not ``add``, which acts on the residual)."""
    if op == "scale":
        return old * value
    if op == "cap":
        return old.clamp(max=float(value))
    return torch.full_like(old, float(value))  # set; ablate (value 0, or the feature's mean)


def feature_ablation(saes: Mapping[str, SAE], chosen: Mapping[str, list[int]]) -> Interventions | None:
    """One intervention zero-ablating ``chosen[hook]`` features of ``saes[hook]`` at every position, on
    every layer at once (``Interventions`` of ``FeatureSteering``); ``None`` when nothing is chosen.

    Example::

        ablate = feature_ablation(suite, {"blocks.6.hook_resid_post": [12, 40], "blocks.12.hook_resid_post": [3870]})
    """
    parts = [FeatureSteering(saes[hook], [FeatureEdit(f, "ablate", 0.0) for f in features], hook)
             for hook, features in chosen.items() if features]
    return Interventions(parts) if parts else None
