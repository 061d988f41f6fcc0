"""``WeightEdit``: a low-rank change ``W += u vᵀ`` of one MLP output projection, as a value.

``with edit.apply(lm):`` adds ``u vᵀ`` to the weight and, on exit (even after an exception), puts
back a copy of the original weight taken on entry, so the model is restored bit for bit. Edits
compose (``apply_all``: nested, restored in reverse order). Saved as ``edit.safetensors`` (``u``,
``v``, the value change ``delta``) and ``edit.json`` (request, layer, module, method, the model's and
the key statistics' fingerprints), written atomically.

``u`` lives in the output space (``d_model``), ``v`` in the key space (the MLP's hidden width): vectors
for a rank-one ROME edit, ``[d_model, r]`` / ``[d_ff, r]`` matrices otherwise (FT-L stores its dense
change as ``u = I``, ``v = ΔWᵀ``). For GPT-2's ``Conv1D`` (weight stored as ``[in, out]``) the update
is transposed.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from saescope.editing.request import EditRequest
from saescope.editing.weight_delta import WeightDelta, added_to_weights, load_delta, write_tensor_folder
from saescope.errors import SaescopeError
from saescope.model.hooks import Together
from saescope.model.loading import LoadedModel
from saescope.storage import read_json

if TYPE_CHECKING:
    from saescope.steering.base import Intervention


@dataclass
class WeightEdit:
    """A low-rank edit of ``module`` (e.g. ``model.layers.6.mlp.down_proj``) made for ``request``."""

    module: str
    layer: int
    u: Tensor  # [d_model] or [d_model, r]
    v: Tensor  # [d_ff] or [d_ff, r]
    request: EditRequest
    delta: Tensor  # v* - v: the change of the MLP output at the subject's key (what the gender-vector study reads)
    method: str = "r-rome"
    info: dict[str, Any] = field(default_factory=dict)

    def _weight(self, lm: LoadedModel) -> tuple[Tensor, bool]:
        modules = dict(lm.model.named_modules())
        if self.module not in modules:
            raise SaescopeError(f"this edit changes {self.module}, which {lm.name} does not have: it was made for "
                                "another model")
        weight = modules[self.module].weight
        transposed = type(modules[self.module]).__name__ == "Conv1D"
        shape = (len(self.v), len(self.u)) if transposed else (len(self.u), len(self.v))
        if tuple(weight.shape) != shape:
            raise SaescopeError(f"this edit is for a {shape[0]}x{shape[1]} weight, but {self.module} of {lm.name} is "
                                f"{weight.shape[0]}x{weight.shape[1]}: it was made for another model")
        return weight, transposed

    def update(self) -> Tensor:
        """``[d_model, d_ff]`` float32 ``u vᵀ``."""
        as_matrix = lambda t: t.float()[:, None] if t.dim() == 1 else t.float()
        return as_matrix(self.u) @ as_matrix(self.v).T

    def to_dict(self) -> dict[str, Any]:
        """What the edit is, without its tensors (for JSON outputs)."""
        return {"type": "WeightEdit", "module": self.module, "layer": self.layer, "method": self.method,
                "request": self.request.to_dict()}

    def apply(self, lm: LoadedModel) -> AbstractContextManager:
        """Active inside the block; the original weight is restored exactly on exit."""
        weight, transposed = self._weight(lm)
        update = self.update()
        return added_to_weights([(weight, update.T if transposed else update)])

    FILE_NAME = "edit"  # what a folder of results calls a saved edit (``bias.outputs``)

    def save(self, folder: str | Path) -> Path:
        meta = {"format": "saescope-edit/1", "module": self.module, "layer": self.layer, "method": self.method,
                "request": self.request.to_dict(), "info": self.info}
        return write_tensor_folder(folder, {"u": self.u, "v": self.v, "delta": self.delta}, meta, "edit", "an edit")


def load_edit(folder: str | Path) -> WeightEdit:
    """Read a folder written by ``WeightEdit.save``; a damaged or foreign folder raises ``SaescopeError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_json(folder / "edit.json", "edit file")
    try:
        tensors = load_file(folder / "edit.safetensors")
        request = EditRequest(**meta["request"])
        edit = WeightEdit(str(meta["module"]), int(meta["layer"]), tensors["u"], tensors["v"], request,
                          tensors["delta"], str(meta.get("method", "r-rome")), dict(meta.get("info", {})))
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise SaescopeError(f"{folder} is not a readable saescope edit ({type(exc).__name__}: {exc}); "
                            "write it again with `saescope edit rome`") from None
    named = re.search(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.", edit.module)
    if named is not None and int(named.group(1)) != edit.layer:
        raise SaescopeError(f"{folder}/edit.json: module {edit.module!r} is in layer {named.group(1)} but layer says "
                            f"{edit.layer}: write the edit again with `saescope edit rome`")
    shapes_match = edit.u.dim() == edit.v.dim() and edit.u.dim() in (1, 2) and edit.u.shape[1:] == edit.v.shape[1:]
    if not shapes_match or not (edit.u.isfinite().all() and edit.v.isfinite().all()):
        raise SaescopeError(f"{folder}/edit.safetensors holds malformed or non-finite vectors")
    return edit


def load_applicable(path: str | Path) -> WeightEdit | WeightDelta | Intervention:
    """What ``--intervention`` / ``--edit`` names: a saved edit folder (``saescope edit rome|ft``), a saved
    weight change (``debias --method cda``) or an intervention JSON file; all apply with ``with x.apply(lm):``."""
    if Path(path).is_dir():
        if (Path(path) / "delta.json").exists():
            return load_delta(path)
        return load_edit(path)
    from saescope.steering import load_intervention

    return load_intervention(path)


def apply_all(edits: list[WeightEdit], lm: LoadedModel) -> AbstractContextManager:
    """Several edits at once (applied in order, undone in reverse order)."""
    return Together(edits).apply(lm)
