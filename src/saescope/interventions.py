"""Interventions as values: build them, combine them, save them to JSON, apply them with ``with``.

Every intervention turns into hook functions for ``saescope.hooks.intervene`` (the one hook layer).
- ``FeatureSteering``: edit SAE features at a hook point. Operations per feature: ``add`` (add
  ``value`` x the feature's unit decoder direction, optionally scaled by the feature's max activation
  in a features RUN, ``scale="max_activation"``, or by the token's residual norm,
  ``scale="residual_norm"``), ``clamp`` (set the activation to ``value``), ``ablate`` (set it to 0, or
  to ``value`` = its mean), ``scale`` (multiply it by ``value``), ``cap`` (clamp from above: ``min(a, value)``, smaller
  activations untouched). ``clamp``/``ablate``/``scale``/``cap`` encode
  with the SAE and add only the change of the edited features through the decoder, so the SAE's
  error term is kept and nothing but those features changes (``x' = x + Σ (a'_f - a_f) W_dec[f]``).
- ``VectorSteering``: add ``coeff`` x a vector (CAA / ActAdd / fitted SAE vectors).
- ``SubspaceErasure``: remove a concept subspace (LEACE-style mean-anchored projection):
  ``x' = x - strength * ((x - mean) U^T) U`` for orthonormal rows ``U``; ``strength`` 1 erases it.
- ``AlignmentSteering``: IBM's layer-level methods driven by per-feature alignment scores:
  ``weight`` (activate ``pre x scores``), ``swap`` (the original pre-activations on the support of
  ``activate(pre x scores)``, IBM's recommended method) and ``clamp`` (top-``top_n`` scored features
  +``value``). IBM decodes without the SAE error term; here the error term is kept unless
  ``keep_error=False``.
- ``Interventions``: several of the above at once (several features, several layers).

Positions: ``positions=None`` acts on every position, prompt and generated (with the KV cache each
decode step is a one-token forward, and the hooks act on it too). A list of ints acts on those
prompt positions only (prompts must then have equal lengths).

Example::

    steer = FeatureSteering("default", [FeatureEdit(123, "add", 8.0)])
    with steer.apply(lm):
        out = lm.model.generate(**lm.tokenize(["Hi"]), max_new_tokens=20)
    steer.save("steer.json"); same = load_intervention("steer.json")
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.hooks import HookFn, execution_order, intervene, resolve_hook
from saescope.models import LoadedModel
from saescope.sae import SAE
from saescope.sae_io import load_sae
from saescope.storage import atomic_path

FEATURE_OPS = ("add", "clamp", "ablate", "scale", "cap")
ALIGNMENT_METHODS = ("weight", "swap", "clamp")


def _finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise SaescopeError(f"{what} must be a finite number, got {value}")
    return value


@dataclass
class FeatureEdit:
    """One feature edit: ``op`` in add | clamp | ablate | scale | cap, with its ``value``."""

    feature: int
    op: str = "add"
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.op not in FEATURE_OPS:
            raise SaescopeError(f"unknown feature operation {self.op!r}: use one of {', '.join(FEATURE_OPS)}")
        self.value = _finite(self.value, f"the {self.op} value of feature {self.feature}")


class _Positions:
    """Which token positions an intervention touches, tracked across KV-cached decode steps."""

    def __init__(self, positions: list[int] | None) -> None:
        self.positions = None if positions is None else sorted(set(int(p) for p in positions))
        self.next = 0
        self._wanted: dict[torch.device, Tensor] = {}

    def mask(self, acts: Tensor) -> Tensor | None:
        """``None`` for all positions, else a ``[1, seq, 1]`` mask for this forward's positions."""
        if self.positions is None:
            return None
        seq = acts.shape[1]
        start = 0 if seq > 1 else self.next  # a multi-token forward starts a new sequence
        self.next = start + seq
        wanted = self._wanted.get(acts.device)
        if wanted is None:
            wanted = self._wanted[acts.device] = torch.tensor(self.positions, device=acts.device)
        absolute = torch.arange(start, start + seq, device=acts.device)
        return torch.isin(absolute, wanted).view(1, seq, 1).to(acts.dtype)


class Intervention:
    """Base: subclasses give ``hook_fns``; ``apply`` is the context manager every one shares."""

    model_name: str | None = None  # the model it was made for, when known (checked by ``apply``)

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        raise NotImplementedError

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[None]:
        """Active inside the block; hooks are removed on exit, even on error."""
        if self.model_name and Path(self.model_name).name != Path(lm.name).name:
            raise SaescopeError(f"this intervention was made for model {self.model_name!r}, not {lm.name!r}")
        fns: dict[str, HookFn] = {}
        for hook, fn in self.hook_fns(lm):
            fns[hook] = _chain(fns[hook], fn) if hook in fns else fn
        with intervene(lm.model, fns):
            yield

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write this intervention as JSON (atomically), with the model it was made for when known."""
        data = self.to_dict()
        if self.model_name:
            data["model"] = self.model_name
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
        return Path(path)


def applied(intervention: Intervention | None, lm: LoadedModel) -> AbstractContextManager:
    """``intervention.apply(lm)``, or a no-op context when there is no intervention."""
    return nullcontext() if intervention is None else intervention.apply(lm)


def _chain(first: HookFn, second: HookFn) -> HookFn:
    def both(acts: Tensor) -> Tensor | None:
        out = first(acts)
        acts = acts if out is None else out
        out2 = second(acts)
        return acts if out2 is None else out2
    return both


class _SAEBound(Intervention):
    """An intervention tied to an SAE, remembered by reference (``"default"`` or a folder) for saving."""

    def __init__(self, sae: SAE | str, hook: str | None) -> None:
        self.sae_ref = sae if isinstance(sae, str) else str(sae.cfg.metadata.get("source", "<in-memory>"))
        self.sae = load_sae(sae) if isinstance(sae, str) else sae
        self.hook = hook or self.sae.cfg.hook_name
        if self.hook is None:
            raise SaescopeError("the SAE does not name its hook point: pass hook=")

    def _check_model(self, lm: LoadedModel) -> None:
        lm.check_sae(self.sae, self.hook)

    def _base_dict(self) -> dict[str, Any]:
        from saescope.feature_run import sae_fingerprint

        return {"sae": self.sae_ref, "sae_fingerprint": sae_fingerprint(self.sae), "hook": self.hook}


class FeatureSteering(_SAEBound):
    """Edit SAE features at one hook point (see the module docstring for the operations)."""

    def __init__(self, sae: SAE | str, edits: list[FeatureEdit], hook: str | None = None,
                 positions: list[int] | None = None, scale: str = "none",
                 max_activations: dict[int, float] | None = None) -> None:
        super().__init__(sae, hook)
        if not edits:
            raise SaescopeError("no feature edits given")
        if scale not in ("none", "max_activation", "residual_norm"):
            raise SaescopeError(f"unknown scale {scale!r}: use none, max_activation or residual_norm")
        if scale == "max_activation" and not max_activations:
            raise SaescopeError("scale='max_activation' needs max_activations (from a features RUN)")
        for edit in edits:
            self.sae.check_feature(edit.feature)
        self.edits, self.positions, self.scale = edits, positions, scale
        self.max_activations = {int(k): float(v) for k, v in (max_activations or {}).items()}

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        self._check_model(lm)
        sae = self.sae.to(lm.device)
        adds = [e for e in self.edits if e.op == "add"]
        sets = [e for e in self.edits if e.op != "add"]
        directions = sae.decoder_directions()
        add_vec = sum((e.value * self.max_activations.get(e.feature, 1.0) * directions[e.feature] for e in adds),
                      torch.zeros(sae.d_in, device=lm.device))
        feats = torch.tensor([e.feature for e in sets], device=lm.device, dtype=torch.long)
        ops = [e.op for e in sets]
        values = torch.tensor([e.value for e in sets], device=lm.device)
        w_dec = sae.W_dec[feats]  # [m, d_in]
        positions = _Positions(self.positions)
        residual_scale = self.scale == "residual_norm"
        cast: dict[torch.dtype, Tensor] = {}

        def steer(acts: Tensor) -> Tensor:
            delta: Tensor | float = 0.0
            if adds:
                vec = cast.get(acts.dtype)
                if vec is None:
                    vec = cast[acts.dtype] = add_vec.to(acts.dtype)
                delta = vec * acts.norm(dim=-1, keepdim=True) if residual_scale else vec
            if sets:
                old = sae.encode(acts.float())[..., feats]  # [batch, seq, m]
                new = torch.stack([_edit(op, old[..., i], values[i]) for i, op in enumerate(ops)], -1)
                delta = delta + ((new - old) @ w_dec).to(acts.dtype)
            mask = positions.mask(acts)
            return acts + (delta if mask is None else delta * mask)

        return [(self.hook, steer)]

    def scaled(self, multiplier: float) -> "FeatureSteering":
        """The same steering with every ``add`` value multiplied by ``multiplier``."""
        edits = [FeatureEdit(e.feature, e.op, e.value * multiplier if e.op == "add" else e.value) for e in self.edits]
        return FeatureSteering(self.sae, edits, self.hook, self.positions, self.scale, self.max_activations)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "features", **self._base_dict(), "positions": self.positions, "scale": self.scale,
                "max_activations": self.max_activations,
                "edits": [{"feature": e.feature, "op": e.op, "value": e.value} for e in self.edits]}


def _edit(op: str, old: Tensor, value: Tensor) -> Tensor:
    if op == "scale":
        return old * value
    if op == "cap":
        return old.clamp(max=float(value))
    return torch.full_like(old, float(value))  # clamp; ablate (value 0, or the feature's mean)


class VectorSteering(Intervention):
    """Add ``coeff`` x ``vector`` at a hook point (CAA/ActAdd, or a fitted sparse SAE vector)."""

    def __init__(self, hook: str, vector: Tensor, coeff: float = 1.0, positions: list[int] | None = None,
                 name: str = "vector") -> None:
        if not torch.isfinite(vector).all():
            raise SaescopeError("the steering vector contains NaN or inf")
        self.hook, self.vector, self.positions, self.name = hook, vector.float().cpu(), positions, name
        self.coeff = _finite(coeff, "the coefficient")

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        resolve_hook(lm.model, self.hook)
        if self.vector.shape != (lm.d_model,):
            raise SaescopeError(f"the steering vector has shape {tuple(self.vector.shape)}, but {lm.name} "
                                f"has d_model={lm.d_model}: it was made for another model")
        base = (self.coeff * self.vector).to(lm.device)
        positions = _Positions(self.positions)
        cast: dict[torch.dtype, Tensor] = {}

        def steer(acts: Tensor) -> Tensor:
            delta = cast.get(acts.dtype)
            if delta is None:
                delta = cast[acts.dtype] = base.to(acts.dtype)
            mask = positions.mask(acts)
            return acts + (delta if mask is None else delta * mask)

        return [(self.hook, steer)]

    def scaled(self, multiplier: float) -> "VectorSteering":
        return VectorSteering(self.hook, self.vector, self.coeff * multiplier, self.positions, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "vector", "name": self.name, "hook": self.hook, "coeff": self.coeff,
                "positions": self.positions, "vector": self.vector.tolist()}


class FeatureGate(_SAEBound):
    """Marks the tokens where any of ``features`` fires (SAE encode at the SAE's hook); erasures skip them."""

    def __init__(self, sae: SAE | str, features: list[int], hook: str | None = None) -> None:
        super().__init__(sae, hook)
        if not features:
            raise SaescopeError("a feature gate needs at least one feature")
        self.features = [self.sae.check_feature(int(f)) for f in features]

    def gate_fn(self, lm: LoadedModel, state: dict[str, Tensor]) -> HookFn:
        self._check_model(lm)
        sae = self.sae.to(lm.device)
        feats = torch.tensor(self.features, device=lm.device)

        def mark(acts: Tensor) -> None:
            state["skip"] = (sae.encode(acts.float())[..., feats] > 0).any(-1, keepdim=True)

        return mark

    def to_dict(self) -> dict[str, Any]:
        return {**self._base_dict(), "features": self.features}


class SubspaceErasure(Intervention):
    """Project ``basis`` (``[k, d_model]``, orthonormalised here) out of the residual around ``mean``.

    With a ``gate`` (``FeatureGate``), tokens where a gate feature fires are left alone; the gate's
    hook must not come after the erasure's (both run in the same forward pass, gate first).
    """

    def __init__(self, hook: str, basis: Tensor, mean: Tensor | None = None, strength: float = 1.0,
                 positions: list[int] | None = None, name: str = "subspace", gate: FeatureGate | None = None) -> None:
        basis = torch.atleast_2d(basis.float().cpu())
        if not torch.isfinite(basis).all() or (mean is not None and not torch.isfinite(mean).all()):
            raise SaescopeError("the erasure basis or mean contains NaN or inf")
        q, r = torch.linalg.qr(basis.T)
        keep = r.diagonal().abs() > 1e-6 * r.diagonal().abs().max()
        self.hook, self.basis, self.name, self.positions = hook, q.T[keep].contiguous(), name, positions
        self.mean = torch.zeros(basis.shape[1]) if mean is None else mean.float().cpu()
        self.strength = _finite(strength, "the erasure strength")
        self.gate = gate

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        point = resolve_hook(lm.model, self.hook)
        if self.basis.shape[1] != lm.d_model:
            raise SaescopeError(f"the erasure basis has width {self.basis.shape[1]}, but {lm.name} has "
                                f"d_model={lm.d_model}: it was made for another model")
        basis, anchor = self.basis.to(lm.device), (self.mean @ self.basis.T).to(lm.device)
        positions = _Positions(self.positions)
        state: dict[str, Tensor] = {}
        fns: list[tuple[str, HookFn]] = []
        if self.gate is not None:
            gate_point = resolve_hook(lm.model, self.gate.hook)
            if execution_order(gate_point) > execution_order(point):
                raise SaescopeError(f"the gate at {self.gate.hook} runs after the erasure at {self.hook}")
            fns.append((self.gate.hook, self.gate.gate_fn(lm, state)))

        def erase(acts: Tensor) -> Tensor:
            coords = acts.float() @ basis.T - anchor  # [batch, seq, k]
            delta = -self.strength * coords @ basis
            if self.gate is not None:
                delta = delta * ~state["skip"]
            delta = delta.to(acts.dtype)
            mask = positions.mask(acts)
            return acts + (delta if mask is None else delta * mask)

        return fns + [(self.hook, erase)]

    def scaled(self, multiplier: float) -> "SubspaceErasure":
        return SubspaceErasure(self.hook, self.basis, self.mean, self.strength * multiplier, self.positions, self.name,
                               self.gate)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "project", "name": self.name, "hook": self.hook, "strength": self.strength,
                "positions": self.positions, "basis": self.basis.tolist(), "mean": self.mean.tolist(),
                "gate": None if self.gate is None else self.gate.to_dict()}


class AlignmentSteering(_SAEBound):
    """IBM's layer-level steering with per-feature alignment ``scores`` [d_sae] in 0..1."""

    def __init__(self, sae: SAE | str, scores: Tensor, method: str = "swap", hook: str | None = None,
                 keep_error: bool = True, top_n: int = 5, value: float = 10.0,
                 positions: list[int] | None = None) -> None:
        super().__init__(sae, hook)
        if method not in ALIGNMENT_METHODS:
            raise SaescopeError(f"unknown alignment method {method!r}: use one of {', '.join(ALIGNMENT_METHODS)}")
        if scores.shape != (self.sae.d_sae,):
            raise SaescopeError(f"scores are for an SAE with {scores.shape[0]} features, this SAE has "
                                f"{self.sae.d_sae}: scores file from another SAE")
        self.scores, self.method, self.keep_error = scores.float().cpu(), method, keep_error
        self.top_n, self.value, self.positions = top_n, _finite(value, "the clamp value"), positions

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        self._check_model(lm)
        sae = self.sae.to(lm.device)
        scores = self.scores.to(lm.device)
        top = scores.topk(self.top_n).indices
        positions = _Positions(self.positions)

        def steer(acts: Tensor) -> Tensor:
            x = acts.float()
            pre = sae.encode_pre(x)
            error = (x - sae.decode(sae.activate(pre))) if self.keep_error else 0.0
            if self.method == "clamp":
                new = sae.activate(pre)
                new[..., top] += self.value
            else:
                weighted = sae.activate(pre * scores)
                new = weighted if self.method == "weight" else pre * (weighted != 0)
            out = sae.decode(new) + error
            mask = positions.mask(acts)
            out = out.to(acts.dtype)
            return out if mask is None else acts + (out - acts) * mask

        return [(self.hook, steer)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "alignment", **self._base_dict(), "method": self.method, "keep_error": self.keep_error,
                "top_n": self.top_n, "value": self.value, "positions": self.positions,
                "scores": self.scores.tolist()}


@dataclass
class Interventions(Intervention):
    """Several interventions applied together (several features, several layers)."""

    parts: list[Intervention] = field(default_factory=list)

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        return [pair for part in self.parts for pair in part.hook_fns(lm)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "all", "parts": [part.to_dict() for part in self.parts]}


def intervention_from_dict(data: dict[str, Any], source: str = "<dict>") -> Intervention:
    """Rebuild an intervention from ``to_dict()`` output; checks the SAE is the one it was made with."""
    kind = data.get("type")
    try:
        if kind == "all":
            return Interventions([intervention_from_dict(part, source) for part in data["parts"]])
        if kind == "vector":
            return VectorSteering(data["hook"], torch.tensor(data["vector"]), data["coeff"], data.get("positions"),
                                  data.get("name", "vector"))
        if kind == "project":
            gate = data.get("gate")
            if gate is not None:
                gate = FeatureGate(_checked_sae(gate, source), gate["features"], gate.get("hook"))
            return SubspaceErasure(data["hook"], torch.tensor(data["basis"]), torch.tensor(data["mean"]),
                                   data.get("strength", 1.0), data.get("positions"), data.get("name", "subspace"),
                                   gate)
        if kind not in ("features", "alignment"):
            raise SaescopeError(f"{source}: unknown intervention type {kind!r}")
        sae = _checked_sae(data, source)
        if kind == "features":
            edits = [FeatureEdit(int(e["feature"]), e["op"], e["value"]) for e in data["edits"]]
            return FeatureSteering(sae, edits, data.get("hook"), data.get("positions"), data.get("scale", "none"),
                                   {int(k): v for k, v in (data.get("max_activations") or {}).items()})
        return AlignmentSteering(sae, torch.tensor(data["scores"]), data["method"], data.get("hook"),
                                 data.get("keep_error", True), data.get("top_n", 5), data.get("value", 10.0),
                                 data.get("positions"))
    except (KeyError, TypeError, ValueError) as exc:
        raise SaescopeError(f"{source} is not a valid intervention file ({type(exc).__name__}: {exc})") from None


def _checked_sae(data: dict[str, Any], source: str) -> SAE:
    """The SAE an intervention names, checked against the fingerprint it was saved with."""
    from saescope.feature_run import sae_fingerprint

    sae = load_sae(data["sae"])
    if data.get("sae_fingerprint") and data["sae_fingerprint"] != sae_fingerprint(sae):
        raise SaescopeError(f"{source} was made for another SAE than {data['sae']!r}")
    sae.cfg.metadata["source"] = data["sae"]
    return sae


def load_intervention(path: str | Path) -> Intervention:
    """Load an intervention saved with ``.save()``."""
    path = Path(path)
    if not path.exists():
        raise SaescopeError(f"intervention file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SaescopeError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SaescopeError(f"{path} is not a valid intervention file (expected a JSON object)")
    intervention = intervention_from_dict(data, str(path))
    intervention.model_name = data.get("model")
    return intervention
