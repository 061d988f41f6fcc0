"""Concept erasure: remove a subspace from the residual (LEACE-style mean-anchored projection),
optionally sparing some tokens: those where an SAE's features fire (``FeatureGate``), or the tokens of
listed words (``TokenGate``, in ``token_gate``).

``x' = x - strength * ((x - mean) U^T) U`` for orthonormal rows ``U``; ``strength`` 1 erases it.
With a separate ``read`` matrix ``R`` the projection is oblique, ``x' = x - strength * ((x - mean) R^T) U``:
LEACE's eraser (``concept_erasure.LeaceEraser``: ``U`` = ``proj_left``ᵀ, ``R`` = ``proj_right``,
``mean`` = ``bias``) is exactly that.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.hooks import HookFn, execution_order, resolve_hook
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.steering.base import Intervention, Positions, SAEBinding, checked_sae, finite, register_intervention
from saescope.steering.token_gate import TokenGate


class FeatureGate(SAEBinding):
    """Marks the tokens where any of ``features`` fires (SAE encode at the SAE's hook).

    Not an intervention on its own: it only tells a ``SubspaceErasure`` which tokens to leave alone."""

    def __init__(self, sae: SAE | str, features: list[int], hook: str | None = None) -> None:
        super().__init__(sae, hook)
        if not features:
            raise SaescopeError("a feature gate needs at least one feature")
        self.features = [self.sae.check_feature(int(f)) for f in features]

    def gate_fn(self, lm: LoadedModel, state: dict[str, Tensor]) -> HookFn:
        """A reading hook that stores ``state["skip"]`` [batch, seq, 1]: True where a gate feature fires."""
        sae = self.sae_on(lm)
        feats = torch.tensor(self.features, device=lm.device)

        def mark(acts: Tensor) -> None:
            state["skip"] = (sae.encode(acts.float())[..., feats] > 0).any(-1, keepdim=True)

        return mark

    def to_dict(self) -> dict[str, Any]:
        return {"type": "FeatureGate", **self.sae_dict(), "features": self.features}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> FeatureGate:
        return cls(checked_sae(data, source), data["features"], data.get("hook"))


GATES = {"FeatureGate": FeatureGate, "TokenGate": TokenGate}  # what a saved erasure's gate can be


@register_intervention("project")
class SubspaceErasure(Intervention):
    """Project ``basis`` (``[k, d_model]``, orthonormalised here) out of the residual around ``mean``.

    With a ``gate`` (``FeatureGate`` or ``TokenGate``), the tokens it marks are left alone; the gate's
    hook must not come after the erasure's (both run in the same forward pass, gate first).
    """

    def __init__(self, hook: str, basis: Tensor, mean: Tensor | None = None, strength: float = 1.0,
                 positions: list[int] | None = None, name: str = "subspace",
                 gate: FeatureGate | TokenGate | None = None, read: Tensor | None = None) -> None:
        basis = torch.atleast_2d(basis.float().cpu())
        read = None if read is None else torch.atleast_2d(read.float().cpu())
        if not torch.isfinite(basis).all() or (mean is not None and not torch.isfinite(mean).all()) or (
                read is not None and not torch.isfinite(read).all()):
            raise SaescopeError("the erasure basis, read matrix or mean contains NaN or inf")
        if read is None:  # an orthogonal projection: orthonormalise the basis
            q, r = torch.linalg.qr(basis.T)
            basis = q.T[r.diagonal().abs() > 1e-6 * r.diagonal().abs().max()]
        elif read.shape != basis.shape:
            raise SaescopeError(f"the read matrix {tuple(read.shape)} and the basis {tuple(basis.shape)} differ in shape")
        self.hook, self.basis, self.read, self.name, self.positions = hook, basis.contiguous(), read, name, positions
        self.mean = torch.zeros(basis.shape[1]) if mean is None else mean.float().cpu()
        self.strength = finite(strength, "the erasure strength")
        self.gate = gate

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        point = resolve_hook(lm.model, self.hook)
        if self.basis.shape[1] != lm.d_model:
            raise SaescopeError(f"the erasure basis has width {self.basis.shape[1]}, but {lm.name} has "
                                f"d_model={lm.d_model}: it was made for another model")
        read = (self.basis if self.read is None else self.read).to(lm.device)
        basis, anchor = self.basis.to(lm.device), (self.mean.to(lm.device) @ read.T)
        positions = Positions(self.positions)
        state: dict[str, Tensor] = {}
        fns: list[tuple[str, HookFn]] = []
        if self.gate is not None:
            if execution_order(resolve_hook(lm.model, self.gate.hook)) > execution_order(point):
                raise SaescopeError(f"the gate at {self.gate.hook} runs after the erasure at {self.hook}")
            fns.append((self.gate.hook, self.gate.gate_fn(lm, state)))

        def erase(acts: Tensor) -> Tensor:
            coords = acts.float() @ read.T - anchor  # [batch, seq, k]
            delta = -self.strength * coords @ basis
            if self.gate is not None:
                delta = delta * ~state["skip"]
            return positions.masked(acts, delta.to(acts.dtype))

        return fns + [(self.hook, erase)]

    def scaled(self, multiplier: float) -> SubspaceErasure:
        return SubspaceErasure(self.hook, self.basis, self.mean, self.strength * multiplier, self.positions, self.name,
                               self.gate, self.read)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "SubspaceErasure", "name": self.name, "hook": self.hook, "strength": self.strength,
                "positions": self.positions, "basis": self.basis.tolist(), "mean": self.mean.tolist(),
                "gate": None if self.gate is None else self.gate.to_dict(),
                **({} if self.read is None else {"read": self.read.tolist()})}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> SubspaceErasure:
        gate = data.get("gate")
        return cls(data["hook"], torch.tensor(data["basis"]), torch.tensor(data["mean"]), data.get("strength", 1.0),
                   data.get("positions"), data.get("name", "subspace"),
                   None if gate is None else GATES[gate.get("type", "FeatureGate")].from_dict(gate, source),
                   None if data.get("read") is None else torch.tensor(data["read"]))
