"""``WeightDelta``: full-rank changes of a few weight matrices (what fine-tuning leaves behind), applied
inside a ``with`` block and restored exactly, saved as safetensors.

A rank-one ROME edit is a ``WeightEdit``; a fine-tune (counterfactual data augmentation, ``bias.debias.cda``)
changes whole matrices, so it is stored as ``{module: delta}``. Folder: ``delta.safetensors`` (one
float32 tensor per module, named by its module path) and ``delta.json`` (``{"format":
"saescope-delta/1", "modules": [...], "info": {...}}``). ``editing.weight_edit.load_applicable`` reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.storage import atomic_path, read_json, write_json

FORMAT = "saescope-delta/1"


@contextmanager
def added_to_weights(changes: list[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """``weight += change`` (in float32, stored in the weight's dtype) for every pair inside the block;
    every weight is restored exactly on exit, whatever happens. The one mechanism behind ``WeightDelta``
    and ``WeightEdit``."""
    originals = [weight.detach().clone() for weight, _ in changes]
    try:
        with torch.no_grad():
            for weight, change in changes:
                weight.copy_((weight.float() + change.to(weight.device).float()).to(weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for (weight, _), original in zip(changes, originals):
                weight.copy_(original)


def write_tensor_folder(folder: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any], stem: str,
                        what: str) -> Path:
    """``folder/<stem>.safetensors`` (float32) and ``folder/<stem>.json``, written at once (a failure leaves
    an earlier folder as it was): how ``WeightDelta`` and ``WeightEdit`` save themselves."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SaescopeError(f"{folder} is a file: {what} is saved as a folder")
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp / f"{stem}.safetensors"))
        write_json(tmp / f"{stem}.json", meta)
    return folder


@dataclass
class WeightDelta:
    """``weight += delta`` for every ``module -> delta`` while applied."""

    deltas: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    FILE_NAME = "edit"  # what a folder of results calls it (``bias.outputs``)

    def _weights(self, lm: LoadedModel) -> dict[str, Tensor]:
        modules = dict(lm.model.named_modules())
        out = {}
        for name, delta in self.deltas.items():
            if name not in modules or not hasattr(modules[name], "weight"):
                raise SaescopeError(f"this weight change is for {name}, which {lm.name} does not have: it was made "
                                    "for another model")
            weight = modules[name].weight
            if tuple(weight.shape) != tuple(delta.shape):
                raise SaescopeError(f"the change of {name} is {tuple(delta.shape)}, the weight of {lm.name} is "
                                    f"{tuple(weight.shape)}: it was made for another model")
            out[name] = weight
        return out

    def apply(self, lm: LoadedModel) -> AbstractContextManager:
        """Active inside the block; every original weight is restored exactly on exit."""
        weights = self._weights(lm)
        return added_to_weights([(weights[name], delta) for name, delta in self.deltas.items()])

    def to_dict(self) -> dict[str, Any]:
        """What the change is, without its tensors (for JSON outputs)."""
        return {"type": "WeightDelta", "modules": sorted(self.deltas), "info": self.info}

    def save(self, folder: str | Path) -> Path:
        return write_tensor_folder(folder, self.deltas, {"format": FORMAT, "modules": sorted(self.deltas),
                                                         "info": self.info}, "delta", "a weight change")


def load_delta(folder: str | Path) -> WeightDelta:
    """Read a folder written by ``WeightDelta.save``; a damaged or foreign folder raises ``SaescopeError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_json(folder / "delta.json", "weight-change file")
    try:
        tensors = load_file(folder / "delta.safetensors")
        if meta.get("format") != FORMAT or sorted(tensors) != sorted(meta["modules"]):
            raise ValueError("the tensors do not match delta.json")
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise SaescopeError(f"{folder} is not a readable saescope weight change ({type(exc).__name__}: {exc})") from None
    if not all(bool(t.isfinite().all()) for t in tensors.values()):
        raise SaescopeError(f"{folder}/delta.safetensors holds non-finite values")
    return WeightDelta(tensors, dict(meta.get("info", {})))
