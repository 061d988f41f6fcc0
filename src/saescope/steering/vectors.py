"""Steering vectors: add ``coeff`` x a vector at a hook point (CAA / ActAdd, or a fitted SAE vector)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.hooks import HookFn, resolve_hook
from saescope.model.loading import LoadedModel
from saescope.steering.base import Intervention, Positions, finite, register_intervention


@register_intervention("vector")
class VectorSteering(Intervention):
    """Add ``coeff`` x ``vector`` [d_model] at ``hook``.

    Example::

        with VectorSteering("blocks.12.hook_resid_post", caa, coeff=4.0).apply(lm):
            ...
    """

    def __init__(self, hook: str, vector: Tensor, coeff: float = 1.0, positions: list[int] | None = None,
                 name: str = "vector") -> None:
        if not torch.isfinite(vector).all():
            raise SaescopeError("the steering vector contains NaN or inf")
        self.hook, self.vector, self.positions, self.name = hook, vector.float().cpu(), positions, name
        self.coeff = finite(coeff, "the coefficient")

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        resolve_hook(lm.model, self.hook)
        if self.vector.shape != (lm.d_model,):
            raise SaescopeError(f"the steering vector has shape {tuple(self.vector.shape)}, but {lm.name} "
                                f"has d_model={lm.d_model}: it was made for another model")
        base = (self.coeff * self.vector).to(lm.device)
        positions = Positions(self.positions)
        cast: dict[torch.dtype, Tensor] = {}

        def steer(acts: Tensor) -> Tensor:
            delta = cast.get(acts.dtype)
            if delta is None:
                delta = cast[acts.dtype] = base.to(acts.dtype)
            return positions.masked(acts, delta)

        return [(self.hook, steer)]

    def scaled(self, multiplier: float) -> VectorSteering:
        return VectorSteering(self.hook, self.vector, self.coeff * multiplier, self.positions, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "VectorSteering", "name": self.name, "hook": self.hook, "coeff": self.coeff,
                "positions": self.positions, "vector": self.vector.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> VectorSteering:
        return cls(data["hook"], torch.tensor(data["vector"]), data["coeff"], data.get("positions"),
                   data.get("name", "vector"))
