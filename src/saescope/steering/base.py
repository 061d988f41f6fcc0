"""Interventions as values: build them, combine them, save them to JSON, apply them with ``with``.

Every intervention turns into hook functions for ``saescope.model.hooks.intervene`` (the one hook
layer). The kinds live beside this file: ``features`` (``FeatureSteering``), ``vectors``
(``VectorSteering``), ``erasure`` (``SubspaceErasure`` with an optional ``FeatureGate``), ``ibm``
(``AlignmentSteering``); ``Interventions`` here applies several at once.

Saved files are JSON whose ``type`` is the class name; each class registers itself once
(``register_intervention``) with the tags older versions wrote (``features``, ``vector``,
``project``, ``alignment``, ``all``), so those files still load.

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

import copy
import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.hooks import HookFn, intervene
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE, sae_fingerprint
from saescope.sae.formats import load_sae
from saescope.storage import read_json, write_json

_REGISTRY: dict[str, type[Intervention]] = {}
T = TypeVar("T", bound="type[Intervention]")


def register_intervention(*legacy_tags: str) -> Callable[[T], T]:
    """Class decorator: saved files with ``type`` = the class name (or a legacy tag) load as this class."""
    def register(cls: T) -> T:
        for tag in (cls.__name__, *legacy_tags):
            _REGISTRY[tag] = cls
        return cls
    return register


MAX_MAGNITUDE = 1e6  # larger coefficients only overflow the model (inf/NaN logits)


def finite(value: float, what: str) -> float:
    """``float(value)`` if it is finite and at most ``MAX_MAGNITUDE`` in size; else a ``SaescopeError``."""
    value = float(value)
    if not math.isfinite(value):
        raise SaescopeError(f"{what} must be a finite number, got {value}")
    if abs(value) > MAX_MAGNITUDE:
        raise SaescopeError(f"{what} is {value:g}; at most {MAX_MAGNITUDE:g} in size is accepted (larger values "
                            "only make the model's outputs overflow)")
    return value


class Positions:
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

    def masked(self, acts: Tensor, delta: Tensor | float) -> Tensor:
        """``acts + delta`` at the chosen positions (everywhere when there is no position list)."""
        mask = self.mask(acts)
        return acts + (delta if mask is None else delta * mask)


class Intervention:
    """Base: subclasses give ``hook_fns``, ``to_dict`` and ``from_dict``; ``apply`` is shared."""

    model_name: str | None = None  # the model it was made for, when known (checked by ``apply``)

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        raise NotImplementedError

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[None]:
        """Active inside the block; hooks are removed on exit, even on error."""
        self.check_model(lm)
        fns: dict[str, HookFn] = {}
        for hook, fn in self.hook_fns(lm):
            fns[hook] = _chain(fns[hook], fn) if hook in fns else fn
        with intervene(lm.model, fns):
            yield

    def check_model(self, lm: LoadedModel) -> None:
        """A one-line error when it was made for another model than ``lm``."""
        if self.model_name and Path(self.model_name).name != Path(lm.name).name:
            raise SaescopeError(f"this intervention was made for model {self.model_name!r}, not {lm.name!r}")

    @property
    def position_wise(self) -> bool:
        """True when it acts the same at every position (no ``positions`` list): then packed rows
        (``model.shared_prefix``) see exactly what separate sentences would."""
        return getattr(self, "positions", None) is None

    def scaled(self, multiplier: float) -> Intervention:
        """The same intervention with its strength multiplied by ``multiplier`` (steering sweeps)."""
        raise SaescopeError(f"a {type(self).__name__} has no strength to scale")

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Intervention:
        raise NotImplementedError

    FILE_NAME = "intervention.json"  # what a folder of results calls a saved intervention

    def save(self, path: str | Path) -> Path:
        """Write this intervention as JSON (atomically), with the model it was made for when known."""
        data = self.to_dict()
        if self.model_name:
            data["model"] = self.model_name
        return write_json(path, data)


def _chain(first: HookFn, second: HookFn) -> HookFn:
    def both(acts: Tensor) -> Tensor | None:
        out = first(acts)
        out2 = second(acts if out is None else out)
        return out if out2 is None else out2  # None when neither replaced anything
    return both


class SAEBinding:
    """An SAE remembered by reference (``"default"`` or a folder) for saving, and its hook point.

    ``sae_on(device)`` never moves the caller's SAE: it returns it when it is already there, else
    a copy on that device (made once)."""

    def __init__(self, sae: SAE | str, hook: str | None) -> None:
        self.sae_ref = sae if isinstance(sae, str) else str(sae.cfg.metadata.get("source", "<in-memory>"))
        self.sae = load_sae(sae) if isinstance(sae, str) else sae
        self.hook = hook or self.sae.cfg.hook_name
        if self.hook is None:
            raise SaescopeError("the SAE does not name its hook point: give the hook explicitly")
        self._copies: dict[torch.device, SAE] = {}

    def sae_on(self, lm: LoadedModel) -> SAE:
        """The SAE on ``lm``'s device, checked against ``lm``."""
        lm.check_sae(self.sae, self.hook)
        device = lm.device
        if self.sae.W_dec.device == device:
            return self.sae
        if device not in self._copies:
            self._copies[device] = copy.deepcopy(self.sae).to(device)
        return self._copies[device]

    def sae_dict(self) -> dict[str, Any]:
        return {"sae": self.sae_ref, "sae_fingerprint": sae_fingerprint(self.sae), "hook": self.hook}


@register_intervention("all")
@dataclass
class Interventions(Intervention):
    """Several interventions applied together (several features, several layers)."""

    parts: list[Intervention] = field(default_factory=list)

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        return [pair for part in self.parts for pair in part.hook_fns(lm)]

    @property
    def position_wise(self) -> bool:
        return all(part.position_wise for part in self.parts)

    def scaled(self, multiplier: float) -> Interventions:
        return Interventions([part.scaled(multiplier) for part in self.parts])

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Interventions", "parts": [part.to_dict() for part in self.parts]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Interventions:
        return cls([intervention_from_dict(part, source) for part in data["parts"]])


def intervention_from_dict(data: dict[str, Any], source: str = "<dict>") -> Intervention:
    """Rebuild an intervention from ``to_dict()`` output; checks the SAE is the one it was made with."""
    from saescope.steering import KINDS

    for module in KINDS:  # importing a kind registers it
        importlib.import_module(f"saescope.steering.{module}")
    kind = data.get("type")
    if kind not in _REGISTRY:
        raise SaescopeError(f"{source}: unknown intervention type {kind!r} (known: "
                            f"{', '.join(sorted(t for t in _REGISTRY if t[0].isupper()))})")
    try:
        return _REGISTRY[kind].from_dict(data, source)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SaescopeError(f"{source} is not a valid intervention file ({type(exc).__name__}: {exc})") from None


def checked_sae(data: dict[str, Any], source: str) -> SAE:
    """The SAE an intervention names, checked against the fingerprint it was saved with."""
    sae = load_sae(data["sae"])
    if data.get("sae_fingerprint") and data["sae_fingerprint"] != sae_fingerprint(sae):
        raise SaescopeError(f"{source} was made for another SAE than {data['sae']!r}")
    sae.cfg.metadata["source"] = data["sae"]
    return sae


def load_intervention(path: str | Path) -> Intervention:
    """Load an intervention saved with ``.save()``."""
    data = read_json(path, "intervention file")
    if not isinstance(data, dict):
        raise SaescopeError(f"{path} is not a valid intervention file (expected a JSON object)")
    intervention = intervention_from_dict(data, str(path))
    intervention.model_name = data.get("model")
    return intervention
