"""Skip the blocks an intervention cannot change: replay the plain model's residual stream below it.

An intervention whose first hook (or first edited weight) is in block ``L`` leaves blocks ``0..L-1``
exactly as they are, so on inputs the plain model has already seen, the input of block ``L`` is
known. ``PrefixReplay(lm, L)`` keeps, per forward pass (keyed by a hash of every input tensor: ids,
attention mask, position ids), that input; on a pass it has seen it runs only blocks ``L..`` and feeds
block ``L`` the kept tensor, on a new one it runs everything and keeps it. Scoring the intervened model
over a benchmark the plain model was scored on then costs ``(n_layers - L) / n_layers`` of the blocks
(``bias eval`` with a steering vector at layer 12 of 30: 40 % of the blocks skipped).

``first_touched_layer(lm, intervention)`` finds ``L`` without trusting the intervention to declare it:
it applies the intervention and looks for the modules whose hooks, ``forward`` or parameters (the
in-place version counter that a ``WeightEdit`` bumps) changed. Anything outside the blocks other than
the final norm and the LM head counts as block 0 (no replay).

The first use per model and layer checks a replayed pass against a full one on a short input and
turns replay off when they differ (an architecture whose blocks read something the replay does not
restore). Kept tensors can be saved and loaded (safetensors) so repeated runs replay from disk.
"""

from __future__ import annotations

import hashlib
import inspect
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from saescope.model.arch import FINAL_NORMS, layer_list_path, layer_of
from saescope.model.hooks import Applicable
from saescope.model.loading import LoadedModel

_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer: replay is exact}


def _module_state(model: nn.Module) -> dict[str, tuple]:
    state: dict[str, tuple] = {}
    for name, module in model.named_modules():
        state[name] = (tuple(module._forward_hooks), tuple(module._forward_pre_hooks), "forward" in module.__dict__,
                       tuple(p._version for p in module.parameters(recurse=False)))
    return state


def first_touched_layer(lm: LoadedModel, intervention: Applicable) -> int:
    """The first block whose computation ``intervention`` changes (0 when it changes anything before the
    blocks; the number of blocks when it changes nothing in them)."""
    model = lm.model
    before = _module_state(model)
    with intervention.apply(lm):
        during = _module_state(model)
    changed = [name for name, state in during.items() if before.get(name) != state]
    after_blocks = set(FINAL_NORMS)
    head = model.get_output_embeddings()
    after_blocks |= {name for name, module in model.named_modules() if module is head}
    n_blocks = len(_blocks(model)[2])
    first = n_blocks
    for name in changed:
        layer = layer_of(model, name)
        if layer is None:
            if name in after_blocks:
                continue
            return 0
        first = min(first, layer)
    return first


def _blocks(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """``(the module that owns the block list, its attribute name, the list)``."""
    path = layer_list_path(model)
    parent_path, _, attribute = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, attribute, getattr(parent, attribute)


def _inputs_key(forward: Any, args: tuple, kwargs: dict) -> str | None:
    """A hash of every tensor the pass reads, by argument name; ``None`` (do not keep or replay) when it
    also reads some other object, such as a KV cache."""
    try:
        arguments = inspect.signature(forward).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return None
    flat: dict[str, Any] = {}
    for name, value in arguments.items():
        flat |= {f"{name}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value}
    digest = hashlib.blake2b(digest_size=16)
    for name, value in sorted(flat.items()):
        if isinstance(value, Tensor):
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            return None
    return digest.hexdigest()


class PrefixReplay:
    """The inputs of block ``layer`` on every forward pass seen, replayed on passes seen before.

    Example::

        replay = PrefixReplay(lm, first_touched_layer(lm, steering))
        with replay.active():
            plain = score(lm)                 # runs every block, keeps block 12's inputs
            with steering.apply(lm):
                steered = score(lm)           # runs blocks 12.. only
    """

    def __init__(self, lm: LoadedModel, layer: int) -> None:
        self.lm, self.layer = lm, int(layer)
        self.kept: dict[str, Tensor] = {}
        self.added = 0  # entries kept since construction or the last load
        self.hits = 0

    @property
    def useful(self) -> bool:
        """Whether there are blocks to skip and replay is exact on this model."""
        n_blocks = len(_blocks(self.lm.model)[2])
        return 0 < self.layer < n_blocks and self._exact()

    def _exact(self) -> bool:
        checked = _CHECKED.setdefault(self.lm.model, {})
        if self.layer not in checked:
            probe = PrefixReplay(self.lm, self.layer)
            ids = torch.tensor([[1, 5, 9, 2, 7, 3]], device=self.lm.device) % self.lm.model.config.vocab_size
            with torch.inference_mode(), probe._hooks():
                full = self.lm.model(input_ids=ids, use_cache=False).logits
                replayed = self.lm.model(input_ids=ids, use_cache=False).logits
            checked[self.layer] = probe.hits == 1 and bool(torch.allclose(full, replayed, rtol=1e-4, atol=1e-4))
        return checked[self.layer]

    @contextmanager
    def active(self) -> Iterator[None]:
        """Keep and replay inside the block (a no-op when ``useful`` is false)."""
        if not self.useful:
            yield
            return
        with self._hooks():
            yield

    @contextmanager
    def _hooks(self) -> Iterator[None]:
        parent, attribute, blocks = _blocks(self.lm.model)
        target = blocks[self.layer]
        pending: dict[str, Any] = {}

        def restore() -> None:
            if getattr(parent, attribute) is not blocks:
                setattr(parent, attribute, blocks)

        def on_enter(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            restore()
            pending.clear()
            key = _inputs_key(parent.forward, args, kwargs)
            if key is None:
                return
            pending["key"] = key
            if key in self.kept:
                pending["hidden"] = self.kept[key]
                setattr(parent, attribute, nn.ModuleList(list(blocks)[self.layer:]))

        def on_exit(_module: nn.Module, _args: tuple, _output: object) -> None:
            restore()

        def at_block(_module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            if "key" not in pending:
                return None
            key = pending.pop("key")
            hidden = pending.pop("hidden", None)
            if hidden is None:
                acts = kwargs["hidden_states"] if not args else args[0]
                self.kept[key] = acts.detach().to("cpu", copy=True)
                self.added += 1
                return None
            self.hits += 1
            hidden = hidden.to(self.lm.device)
            if not args:
                return args, {**kwargs, "hidden_states": hidden}
            return (hidden, *args[1:]), kwargs

        handles = [parent.register_forward_pre_hook(on_enter, with_kwargs=True),
                   parent.register_forward_hook(on_exit),
                   target.register_forward_pre_hook(at_block, with_kwargs=True, prepend=True)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            restore()

    def save(self, path: str | Path) -> None:
        """Write the kept tensors (safetensors, atomically); an unwritable place is skipped silently."""
        from safetensors.torch import save_file

        from saescope.errors import SaescopeError
        from saescope.storage import atomic_path

        if not self.added:
            return
        try:
            with atomic_path(path) as tmp:
                save_file({k: v.cpu().contiguous() for k, v in self.kept.items()}, str(tmp),
                          metadata={"layer": str(self.layer)})
            self.added = 0
        except (OSError, SaescopeError):
            pass

    def load(self, path: str | Path) -> None:
        """Add the tensors of a file written by ``save`` (a missing or unreadable file adds nothing)."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("layer") != str(self.layer):
                    return
                for key in handle.keys():
                    self.kept.setdefault(key, handle.get_tensor(key))
        except (OSError, SafetensorError):
            return
