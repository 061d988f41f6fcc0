"""Where each model family keeps its parts: the list of blocks, the sublayers, the final norm.

Found by matching module names of the Hugging Face model (Llama/Mistral/Qwen, Gemma 2/3, GPT-2,
GPT-NeoX/Pythia, OPT), never by model name. Gemma's sublayers end in a norm, so its attention / MLP
outputs are read after ``post_attention_layernorm`` / ``post_feedforward_layernorm``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from saescope.errors import SaescopeError

LAYER_LISTS = ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers",
               "model.decoder.layers", "layers")
ATTENTION_NAMES = ("self_attn", "attn", "attention")
FINAL_NORMS = ("model.norm", "model.language_model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm",
               "model.decoder.final_layer_norm")


EMBEDDINGS = ("model.embed_tokens", "model.language_model.embed_tokens", "transformer.wte", "gpt_neox.embed_in",
              "model.decoder.embed_tokens")


class Submodules(Mapping[str, nn.Module]):
    """A model's submodules by dotted path, each looked up on demand (``get_submodule``): resolving a hook
    point costs a few attribute lookups, not a walk over every module (a scrub resolves ~100 per use)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __getitem__(self, path: str) -> nn.Module:
        if not path:
            raise KeyError(path)
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            raise KeyError(path) from None

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.model.named_modules() if name)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def input_embedding_path(model: nn.Module) -> str:
    """The dotted path of the model's input embedding (``get_input_embeddings()``)."""
    embedding, modules = model.get_input_embeddings(), Submodules(model)
    known = next((path for path in EMBEDDINGS if modules.get(path) is embedding), None)
    return known or next(path for path, module in model.named_modules() if module is embedding)


def layer_list_path(model: nn.Module) -> str:
    """The dotted path of the model's list of transformer blocks (e.g. ``model.layers``)."""
    modules = Submodules(model)
    for path in LAYER_LISTS:
        if isinstance(modules.get(path), nn.ModuleList):
            return path
    raise SaescopeError(f"cannot find the transformer blocks of {type(model).__name__}: "
                        "use a raw module path such as 'model.layers.12'")


def sublayer_path(modules: Mapping[str, nn.Module], block: str, kind: str) -> str:
    """The module whose output is ``kind`` (``mlp_out`` or ``attn_out``) of the block at path ``block``,
    or whose input is ``mlp_in`` (the MLP itself)."""
    gemma_style = f"{block}.post_feedforward_layernorm" in modules
    if kind == "mlp_in":
        candidates = [f"{block}.mlp"]
    elif kind == "mlp_out":
        candidates = [f"{block}.post_feedforward_layernorm"] if gemma_style else [f"{block}.mlp"]
    else:
        candidates = ([f"{block}.post_attention_layernorm"] if gemma_style
                      else [f"{block}.{attn}" for attn in ATTENTION_NAMES])
    for path in candidates:
        if path in modules:
            return path
    raise SaescopeError(f"cannot find the {kind} module of {block}: use a raw module path instead")


DOWN_PROJECTIONS = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.fc2", "fc2")


def down_projection_path(modules: Mapping[str, nn.Module], block: str) -> str:
    """The MLP's output projection of the block at path ``block`` (Llama/Mistral/Qwen/Gemma ``mlp.down_proj``,
    GPT-2 ``mlp.c_proj``, NeoX ``mlp.dense_4h_to_h``, OPT ``fc2``): the matrix ROME edits."""
    for name in DOWN_PROJECTIONS:
        if f"{block}.{name}" in modules:
            return f"{block}.{name}"
    raise SaescopeError(f"cannot find the MLP output projection of {block} (looked for {', '.join(DOWN_PROJECTIONS)}): "
                        "this architecture is not supported for editing")


def layer_of(model: nn.Module, module_path: str) -> int | None:
    """The block index a module path lies in, or ``None`` outside the blocks."""
    try:
        prefix = layer_list_path(model) + "."
    except SaescopeError:
        return None
    if module_path.startswith(prefix):
        return int(module_path[len(prefix):].split(".")[0])
    return None


def final_norm_scale(model: nn.Module, d_model: int) -> Tensor:
    """The final norm's per-channel scale γ ``[d_model]`` (Gemma's RMSNorm multiplies by 1 + weight)."""
    modules = dict(model.named_modules())
    for name in FINAL_NORMS:
        weight = getattr(modules.get(name), "weight", None)
        if weight is not None and weight.shape == (d_model,):
            scale = weight.detach().float()
            if "Gemma" in type(model).__name__:
                scale = scale + 1.0
            return scale
    return torch.ones(d_model)
