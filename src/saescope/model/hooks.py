"""The one activation-capture and intervention layer: hook-point names -> modules -> forward hooks.

Every capability (training, extraction, steering, ablation, circuits, bias repair, editing) reads
and writes activations through ``intervene`` and ``capture`` here. Hook points use the field's names
(``blocks.12.hook_resid_post``) or raw module paths of the Hugging Face model (``model.layers.12``).

Conventions (modules found by ``model.arch``): ``hook_resid_pre`` is the input of block L (a
forward *pre*-hook on the block); ``hook_resid_post`` its output; ``hook_attn_out`` / ``hook_mlp_out``
what the attention / MLP sublayer adds to the residual; ``hook_mlp_in`` what the MLP reads (the
normalised residual: a pre-hook on the MLP, a transcoder's input); ``hook_mlp_post`` the MLP's hidden
activations, the input of its output projection (a pre-hook on it; ROME's keys). ``hook_tokens`` is
the token ids entering the model (``[batch, seq]``, a pre-hook on the input embedding; read only:
token gates such as ``steering.TokenGate`` read which words are where).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from saescope.errors import SaescopeError
from saescope.model.arch import (
    Submodules,
    down_projection_path,
    input_embedding_path,
    layer_list_path,
    layer_of,
    sublayer_path,
)

HookFn = Callable[[Tensor], "Tensor | None"]  # acts [batch, seq, d] -> replacement, or None to keep

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_out|attn_out|mlp_in|mlp_post)$")
TOKENS = "hook_tokens"
_KIND_ORDER = {"tokens": -1, "resid_pre": 0, "attn_out": 1, "mlp_in": 2, "mlp_post": 2, "mlp_out": 3, "resid_post": 4,
               "module": 4}


class StopForward(Exception):
    """Raised by a hook to end the forward pass once every needed activation is captured."""


@dataclass(frozen=True)
class HookPoint:
    """A resolved hook point: the user's name, the module it reads, and how."""

    name: str
    module_path: str
    layer: int | None
    kind: str  # resid_pre | resid_post | mlp_out | attn_out | mlp_in | mlp_post | module

    @property
    def is_pre(self) -> bool:
        return self.kind in ("tokens", "resid_pre", "mlp_in", "mlp_post")


def resolve_hook(model: nn.Module, name: str) -> HookPoint:
    """Resolve ``blocks.L.hook_*`` or a raw module path to a ``HookPoint``.

    Example::

        resolve_hook(lm.model, "blocks.12.hook_resid_post").module_path   # 'model.layers.12'
    """
    if name == TOKENS:
        return HookPoint(name, input_embedding_path(model), None, "tokens")
    modules = Submodules(model)
    match = _HOOK_RE.match(name)
    if match is None:
        if name in modules and name != "":
            return HookPoint(name, name, layer_of(model, name), "module")
        raise SaescopeError(f"unknown hook point {name!r}: use blocks.L.hook_resid_pre|resid_post|"
                            "mlp_out|attn_out|mlp_in|mlp_post, hook_tokens, or a module path such as 'model.layers.12'")
    layer, kind = int(match.group(1)), match.group(2)
    blocks_path = layer_list_path(model)
    n_layers = len(modules[blocks_path])
    if not 0 <= layer < n_layers:
        raise SaescopeError(f"layer {layer} is out of range: the model has {n_layers} layers (0-{n_layers - 1})")
    block = f"{blocks_path}.{layer}"
    if kind in ("resid_pre", "resid_post"):
        return HookPoint(name, block, layer, kind)
    if kind == "mlp_post":
        return HookPoint(name, down_projection_path(modules, block), layer, kind)
    return HookPoint(name, sublayer_path(modules, block, kind), layer, kind)


def _hidden(output: object) -> Tensor:
    return output if isinstance(output, Tensor) else output[0]  # type: ignore[index]


def _replace_hidden(output: object, new: Tensor) -> object:
    if isinstance(output, Tensor):
        return new
    return (new, *output[1:])  # type: ignore[index]


def _make_hooks(fn: HookFn, point: HookPoint, stop: bool) -> Callable[..., object]:
    if point.is_pre:
        tokens = point.kind == "tokens"  # the embedding's input: token ids, read only
        key = "input" if tokens else "hidden_states"

        def pre_hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            in_kwargs = not args
            acts = kwargs[key] if in_kwargs else args[0]
            new = fn(acts)
            if new is not None and tokens:
                raise SaescopeError("hook_tokens is read only: a hook there must return None")
            if stop:
                raise StopForward
            if new is None:
                return None
            if in_kwargs:
                return args, {**kwargs, key: new}
            return (new, *args[1:]), kwargs
        return pre_hook

    def hook(_module: nn.Module, _args: tuple, output: object) -> object:
        new = fn(_hidden(output))
        if stop:
            raise StopForward
        return None if new is None else _replace_hidden(output, new)
    return hook


@contextmanager
def intervene(model: nn.Module, fns: Mapping[str, HookFn], stop_after_last: bool = False) -> Iterator[None]:
    """Call ``fns[name](acts)`` at each hook point during the forward passes inside the block.

    A function returns a replacement tensor (patching) or ``None`` (reading only). Hooks are removed
    when the block exits, even on error. With ``stop_after_last``, the forward pass raises
    ``StopForward`` right after the last hook point runs (use ``forward_until``).

    Example::

        with intervene(lm.model, {"blocks.12.hook_resid_post": lambda a: a * 0}):
            logits = lm.model(ids).logits
    """
    points = [resolve_hook(model, name) for name in fns]
    modules = Submodules(model)
    last = _last_point(model, points) if stop_after_last else None
    handles = []
    try:
        for point, fn in zip(points, fns.values()):
            module = modules[point.module_path]
            hook = _make_hooks(fn, point, stop=point == last)
            if point.is_pre:
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def execution_order(point: HookPoint) -> tuple[int, int]:
    """A sort key: hook points that run earlier in the forward pass sort first."""
    return (point.layer if point.layer is not None else -1, _KIND_ORDER[point.kind])  # tokens: (-1, -1), first


def _last_point(model: nn.Module, points: list[HookPoint]) -> HookPoint:
    order = {path: i for i, (path, _) in enumerate(model.named_modules())}
    return max(points, key=lambda p: (*execution_order(p), order[p.module_path]))


@torch.no_grad()
def forward_until(model: nn.Module, hook_names: list[str], input_ids: Tensor,
                  attention_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Run the model only as far as the last hook point and return the captured activations.

    Layers above the last hook point are never computed. Example::

        acts = forward_until(lm.model, ["blocks.12.hook_resid_post"], ids)["blocks.12.hook_resid_post"]
    """
    captured: dict[str, Tensor] = {}
    with intervene(model, _recorders(captured, hook_names), stop_after_last=True):
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass
    return captured


@contextmanager
def capture(model: nn.Module, hook_names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Record activations at the hook points during every forward pass inside the block (full pass).

    The dict maps each hook name to the activation of the latest pass. Example::

        with capture(lm.model, ["blocks.3.hook_mlp_out"]) as acts:
            lm.model(ids)
        acts["blocks.3.hook_mlp_out"].shape     # [batch, seq, d_model]
    """
    captured: dict[str, Tensor] = {}
    with intervene(model, _recorders(captured, hook_names)):
        yield captured


@contextmanager
def capture_with_grad(model: nn.Module, hook_names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Like ``capture``, but the recorded activations receive gradients: after ``backward()`` inside
    the block, ``acts[name].grad`` is d(output)/d(activation) at every hook point, from one backward.

    The earliest activation becomes a leaf that requires grad (the model's weights need not); later
    ones keep their graph and retain their gradient. Example::

        with capture_with_grad(lm.model, ["blocks.6.hook_resid_post", "blocks.9.hook_resid_post"]) as acts:
            metric(lm.model(ids).logits).backward()
        acts["blocks.6.hook_resid_post"].grad     # [batch, seq, d_model]
    """
    captured: dict[str, Tensor] = {}

    def recorder(name: str) -> HookFn:
        def record(acts: Tensor) -> Tensor:
            if not acts.requires_grad:
                acts = acts.detach().requires_grad_(True)
            else:
                acts.retain_grad()
            captured[name] = acts
            return acts
        return record

    with torch.enable_grad(), intervene(model, {name: recorder(name) for name in hook_names}):
        yield captured


def _recorders(captured: dict[str, Tensor], hook_names: list[str]) -> dict[str, HookFn]:
    def recorder(name: str) -> HookFn:
        def record(acts: Tensor) -> None:
            captured[name] = acts
        return record
    return {name: recorder(name) for name in hook_names}


class Applicable(Protocol):
    """Anything with ``apply(lm)`` returning a context manager (every ``steering`` intervention)."""

    def apply(self, lm: Any) -> AbstractContextManager: ...


def applied(intervention: Applicable | None, lm: Any) -> AbstractContextManager:
    """``intervention.apply(lm)``, or a no-op context when there is no intervention.

    Example::

        with applied(maybe_steering, lm):
            logits = lm.model(ids).logits
    """
    return nullcontext() if intervention is None else intervention.apply(lm)


class Together:
    """Several ``Applicable`` values (interventions, weight edits) applied at once, undone in reverse.

    Example: ``with Together([edit, steering]).apply(lm): ...``"""

    def __init__(self, parts: list[Applicable]) -> None:
        self.parts = list(parts)

    @contextmanager
    def apply(self, lm: Any) -> Iterator[None]:
        with ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.apply(lm))
            yield
