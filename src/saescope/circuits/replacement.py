"""The local replacement model of an attribution graph (Ameisen et al. 2025; circuit-tracer): the model
on one prompt, made linear so that direct effects between nodes are exact and add up.

On a forward pass under ``linearised``, for ``B`` copies of the prompt (one attribution target each):
- **attention patterns are frozen**: the outputs of every ``q_proj`` and ``k_proj`` are detached, so
  gradients flow through the values and output projections only;
- **normalisations are frozen**: each RMSNorm / LayerNorm keeps its output value but passes gradients
  with its scale (1/rms, or 1/std after centring) held constant;
- **MLPs are replaced** by their transcoder: the MLP's output becomes ``Σ_i a_i·W_dec[i] + b_dec + error``
  (one batched matmul over positions, ``_by_position``),
  where the active features' activations ``a`` [B, n_l] and the error ``e`` [B, T, d] (the MLP's true
  output minus the transcoder's reconstruction) are leaves: constants whose gradients are read; a skip
  transcoder's ``x @ W_skip`` is computed from the live MLP input, so gradients pass through it;
- **token embeddings** are a leaf too.

So the logits and every feature's pre-activation are linear in (embeddings, activations, errors), and for
a target, ``leaf · ∂target/∂leaf`` is each source node's direct effect (an edge). The values of the
forward pass are the model's own: the replacement changes gradients, never activations. Every hook
goes through ``model.hooks.intervene`` (the one intervention layer) or a plain forward hook on the
attention projections and norms this module names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from saescope.errors import SaescopeError
from saescope.model.arch import layer_list_path


@dataclass
class Leaves:
    """The leaves of one linearised pass (filled by its hooks)."""

    embeddings: Tensor | None = None  # [B, T, d]
    activations: dict[int, Tensor] = field(default_factory=dict)  # layer -> [B, n_l]
    errors: dict[int, Tensor] = field(default_factory=dict)  # layer -> [B, T, d]
    mlp_inputs: dict[int, Tensor] = field(default_factory=dict)  # layer -> [B, T, d], with gradients


def attention_projections(model: nn.Module) -> list[nn.Module]:
    """Every block's query and key projections; a one-line error for fused projections (GPT-2)."""
    modules = dict(model.named_modules())
    blocks = layer_list_path(model)
    found = []
    for layer in range(len(modules[blocks])):
        names = [name for name in modules if name.startswith(f"{blocks}.{layer}.")
                 and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj")]
        if len(names) != 2:
            raise SaescopeError("attribution graphs need separate q_proj / k_proj modules (Llama, Qwen, Mistral, "
                                f"Gemma); {type(model).__name__} has none at layer {layer}")
        found += [modules[n] for n in names]
    return found


def norm_modules(model: nn.Module) -> list[nn.Module]:
    """Every normalisation module (by class: LayerNorm, or a name ending in RMSNorm)."""
    return [m for m in model.modules() if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")]


class Frozen:
    """The frozen quantities of one prompt (norm denominators, query and key outputs), recorded on the
    first pass that uses it and replayed on later ones. With it, a pass's *values* are linear in the
    leaves too, not only its gradients: removing a source changes a target by exactly that edge
    (``benchmarks/bench_graphs.py`` checks edges so)."""

    def __init__(self) -> None:
        self.saved: dict[int, list[Tensor]] = {}
        self.calls: dict[int, int] = {}

    def start(self) -> None:
        self.calls = {}

    def value(self, module: nn.Module, current: Tensor) -> Tensor:
        """``current`` on the recording pass; what was recorded at this call on later passes."""
        key = id(module)
        index = self.calls.get(key, 0)
        self.calls[key] = index + 1
        saved = self.saved.setdefault(key, [])
        if index == len(saved):
            saved.append(current.detach())
        return saved[index].expand_as(current) if saved[index].shape != current.shape else saved[index]


def _norm_hook(frozen: Frozen | None):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0].float()
        if isinstance(module, nn.LayerNorm):
            x = x - x.mean(-1, keepdim=True)
            scale = (x.pow(2).mean(-1, keepdim=True) + module.eps).sqrt()
            gain, bias = module.weight.float() if module.weight is not None else 1.0, module.bias
        else:
            eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
            scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
            gain, bias = module.weight.float() + (1.0 if "Gemma" in type(module).__name__ else 0.0), None
        if frozen is None:  # the module's own value, gradients with the scale held constant
            return output.detach() + ((x - x.detach()) * (gain / scale).detach()).to(output.dtype)
        linear = x / frozen.value(module, scale) * gain + (bias.float() if bias is not None else 0.0)
        return linear.to(output.dtype)
    return hook


def _projection_hook(frozen: Frozen | None):
    def hook(module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        return output.detach() if frozen is None else frozen.value(module, output)
    return hook


def _by_position(positions: Tensor, decoders: Tensor, n_pos: int) -> tuple[Tensor, Tensor]:
    """The decoder rows of a layer's active features laid out per position, ``[T, m, d]`` (m: the most
    features at one position, zero rows elsewhere), and each feature's slot in that layout. A layer's
    reconstruction is then one batched matmul whose backward gives every activation's gradient in
    B·T·m·d multiply-adds (no ``[B, n_l, d]`` tensor of parts is built in either direction)."""
    counts = torch.bincount(positions, minlength=n_pos)
    width = max(int(counts.max()) if len(positions) else 0, 1)
    order = torch.argsort(positions, stable=True)
    rank = torch.empty_like(positions)
    starts = torch.cumsum(counts, 0) - counts
    rank[order] = torch.arange(len(positions), device=positions.device) - starts[positions[order]]
    slots = positions * width + rank
    layout = decoders.new_zeros(n_pos * width, decoders.shape[-1]).index_copy(0, slots, decoders)
    return slots, layout.view(n_pos, width, -1)


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the block with the model's eager attention where it has another (sdpa): with the queries and keys
    detached, eager attention's backward is one matmul through the values, where sdpa's fused backward also
    computes the query and key gradients that are thrown away (about a tenth of an attribution's time)."""
    current = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if current in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(current)


@contextmanager
def parameters_frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` need no gradient inside the block (only the leaves do), restored after."""
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def linearised(model: nn.Module, transcoders: dict, plan: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]],
               frozen: Frozen | None = None) -> Iterator[Leaves]:
    """Run ``model`` as the local replacement model (module docstring).

    ``plan[layer] = (positions [n_l], features [n_l], values [B, n_l], error [T, d])``: the active
    features of the prompt at that layer and the MLP's error. ``frozen``: also freeze
    the values (``Frozen``), for passes that change the leaves.
    """
    from saescope.model.hooks import intervene

    leaves = Leaves()
    embedding = model.get_input_embeddings()

    def embed_hook(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        leaves.embeddings = output.detach().clone().requires_grad_(True)
        return leaves.embeddings

    def reader(layer: int):
        def read(x: Tensor) -> None:
            leaves.mlp_inputs[layer] = x
        return read

    def writer(layer: int):
        positions, features, values, error = plan[layer]
        sae = transcoders[layer]
        slots, decoders = _by_position(positions, sae.W_dec[features].float(), len(error))

        def write(y: Tensor) -> Tensor:
            batch = y.shape[0]
            acts = values.to(y.device, torch.float32).clone().requires_grad_(True)
            err = error.to(y.device, torch.float32).expand(batch, -1, -1).clone().requires_grad_(True)
            leaves.activations[layer], leaves.errors[layer] = acts, err
            padded = acts.new_zeros(batch, decoders.shape[0] * decoders.shape[1]).index_copy(1, slots, acts)
            recon = torch.bmm(padded.view(batch, *decoders.shape[:2]).transpose(0, 1), decoders).transpose(0, 1)
            skip = sae.skip(leaves.mlp_inputs[layer].float()) if sae.W_skip is not None else 0.0
            return (recon + sae.b_dec.float() + skip + err).to(y.dtype)
        return write

    fns = {}
    for layer in plan:
        fns[f"blocks.{layer}.hook_mlp_in"] = reader(layer)
        fns[f"blocks.{layer}.hook_mlp_out"] = writer(layer)
    with ExitStack() as stack:
        handles = [embedding.register_forward_hook(embed_hook)]
        if frozen is not None:
            frozen.start()
        handles += [m.register_forward_hook(_projection_hook(frozen)) for m in attention_projections(model)]
        handles += [m.register_forward_hook(_norm_hook(frozen)) for m in norm_modules(model)]
        stack.callback(lambda: [h.remove() for h in handles])
        stack.enter_context(intervene(model, fns))
        yield leaves
