"""ROME (Meng et al. 2022): a rank-one edit of one MLP output projection so that a prompt about a
subject continues with a new target.

1. **Key** ``k*``: the projection's input (``blocks.L.hook_mlp_post``) at the subject's last token,
   averaged over the prompt alone and behind ``prefixes`` random corpus snippets.
2. **Value**: a change ``δ`` of the projection's output at that token, found by Adam so that the
   target follows the prompt in every context, with ``kl_weight`` x KL(edited || original) on
   "{subject} is a" (the subject's essence) and ``weight_decay`` x ``||δ||² / ||v||²``; ``||δ||`` is
   kept within ``clamp_norm`` x ``||v||``. All through the one hook layer (a hook on the projection).
3. **Update** ``W += u vᵀ`` with ``v = C⁻¹k* / ||C⁻¹k*||`` (``C = E[k kᵀ]``, ``statistics``) and
   ``u = δ / (v·k*)`` (``r-rome``: the averaged key is mapped to its new value exactly), or, as the
   original code does (``rome``), ``u = δ / (v·k₀)`` with ``k₀`` the key of the prompt without prefix:
   the update's direction and its scale then come from different keys, which is what makes
   repeated original-ROME edits collapse a model (Gupta et al. 2024).

Example::

    edit = rome_edit(lm, EditRequest("Name: {}. Gender:", "Ben", " Female"), RomeConfig(layer=6))
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from saescope.corpus import load_corpus
from saescope.editing.config import RomeConfig
from saescope.editing.request import EditRequest, locate_subject
from saescope.editing.statistics import key_second_moment
from saescope.editing.weight_edit import WeightEdit
from saescope.errors import SaescopeError
from saescope.model.arch import down_projection_path, layer_list_path
from saescope.model.hooks import forward_until, intervene
from saescope.model.likelihood import pad_id, pad_rows
from saescope.model.loading import LoadedModel


def context_prefixes(count: int, seed: int = 0) -> list[str]:
    """``""`` and ``count`` snippets of 3-10 words from the embedded corpus (training split)."""
    rng = random.Random(seed)
    words = [w for doc in load_corpus("embedded", "train")[:200] for w in doc.text.split()]
    out = [""]
    for _ in range(count):
        start, length = rng.randrange(0, max(1, len(words) - 12)), rng.randint(3, 10)
        out.append(" ".join(words[start:start + length]).rstrip(".") + ". ")
    return out


def _rows(lm: LoadedModel, request: EditRequest, prefixes: list[str], target: list[int]):
    """Token rows ``prefix + prompt + target[:-1]``, each row's subject-last index and prompt length."""
    rows, subject_at, prompt_len = [], [], []
    for prefix in prefixes:
        ids, positions = locate_subject(lm.tokenizer, request.text, request.subject, prefix)
        rows.append(ids + target[:-1])
        subject_at.append(positions[-1])
        prompt_len.append(len(ids))
    return rows, subject_at, prompt_len


def rome_edit(lm: LoadedModel, request: EditRequest, config: RomeConfig | None = None,
              progress: bool = False) -> WeightEdit:
    """The ROME edit of ``request`` (see the module docstring); the model is left unchanged."""
    config = config or RomeConfig()
    layer = config.layer if config.layer is not None else _traced_layer(lm, request)
    if not 0 <= layer < lm.n_layers:
        raise SaescopeError(f"layer {layer} is out of range: {lm.name} has {lm.n_layers} layers (0-{lm.n_layers - 1})")
    modules = dict(lm.model.named_modules())
    module = down_projection_path(modules, f"{layer_list_path(lm.model)}.{layer}")
    target = lm.tokenizer.encode(request.target, add_special_tokens=False)
    if not target:
        raise SaescopeError(f"the target {request.target!r} has no tokens")
    prefixes = context_prefixes(config.prefixes, config.seed)
    rows, subject_at, prompt_len = _rows(lm, request, prefixes, target)
    keys = _keys(lm, layer, rows, subject_at)  # [contexts, d_ff]
    k_star, k_zero = keys.mean(0), keys[0]
    delta, v_init, info = _optimise_value(lm, module, request, rows, subject_at, prompt_len, target, config, progress)
    moment = key_second_moment(lm, layer, config.stats_tokens, progress=progress)
    ridge = 1e-4 * moment.diagonal().mean() * torch.eye(len(moment))
    direction = torch.linalg.solve((moment + ridge).double(), k_star.double().cpu()).float()
    direction = direction / direction.norm()
    scale_key = k_star if config.method == "r-rome" else k_zero
    denominator = float(direction @ scale_key.float().cpu())
    if abs(denominator) < 1e-8:
        raise SaescopeError("the subject's key is orthogonal to the update direction: try another layer")
    info |= {"stats_tokens": config.stats_tokens, "prefixes": len(prefixes), "v_norm": float(v_init.norm()),
             "delta_norm": float(delta.norm()), "model": lm.name}
    return WeightEdit(module, layer, (delta.cpu() / denominator).float(), direction, request, delta.cpu().float(),
                      config.method, info)


@torch.no_grad()
def _keys(lm: LoadedModel, layer: int, rows: list[list[int]], subject_at: list[int]) -> Tensor:
    hook = f"blocks.{layer}.hook_mlp_post"
    ids, mask = pad_rows(rows, pad_id(lm), lm.device)
    acts = forward_until(lm.model, [hook], ids, mask)[hook]
    return acts[torch.arange(len(rows)), torch.tensor(subject_at)].float()


def _optimise_value(lm: LoadedModel, module: str, request: EditRequest, rows: list[list[int]], subject_at: list[int],
                    prompt_len: list[int], target: list[int], config: RomeConfig, progress: bool
                    ) -> tuple[Tensor, Tensor, dict]:
    """``(δ, the original value at the subject, info)``: the change of the projection's output at the
    subject's last token that makes the target follow the prompt in every context."""
    essence, essence_positions = locate_subject(lm.tokenizer, f"{request.subject} is a", request.subject)
    all_rows = rows + [essence]
    positions = torch.tensor(subject_at + [essence_positions[-1]], device=lm.device)
    ids, mask = pad_rows(all_rows, pad_id(lm), lm.device)
    n = len(rows)
    labels = [(r, prompt_len[r] - 1 + t, target[t]) for r in range(n) for t in range(len(target))]
    row_index, at, wanted = (torch.tensor(c, device=lm.device) for c in zip(*labels))
    captured: dict[str, Tensor] = {}
    with torch.no_grad(), intervene(lm.model, {module: lambda out: captured.setdefault("v", out)}):
        original = lm.model(input_ids=ids, attention_mask=mask).logits
    v_init = captured["v"][0, positions[0]].float()  # the value at the subject in the prompt itself
    essence_init = F.log_softmax(original[n, len(essence) - 1].float(), -1)
    delta = torch.zeros(v_init.shape, device=lm.device, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=config.lr)
    rows_all = torch.arange(len(all_rows), device=lm.device)

    def add_delta(out: Tensor) -> Tensor:
        out = out.clone()
        out[rows_all, positions] = out[rows_all, positions] + delta.to(out.dtype)
        return out

    history = []
    for _ in tqdm(range(config.steps), desc="ROME value", disable=not progress):
        with torch.enable_grad(), intervene(lm.model, {module: add_delta}):
            logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
            nll = -F.log_softmax(logits[row_index, at], -1).gather(1, wanted[:, None]).mean()
            essence_now = F.log_softmax(logits[n, len(essence) - 1], -1)
            kl = F.kl_div(essence_init, essence_now, log_target=True, reduction="sum")
            loss = nll + config.kl_weight * kl + config.weight_decay * delta.pow(2).sum() / v_init.pow(2).sum()
            history.append(float(nll.detach()))
            if history[-1] < 0.05:
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            limit = config.clamp_norm * v_init.norm()
            if delta.norm() > limit:
                delta.mul_(limit / delta.norm())
    return delta.detach(), v_init, {"target_nll": history, "steps": len(history)}


def _traced_layer(lm: LoadedModel, request: EditRequest) -> int:
    from saescope.editing.tracing import causal_trace

    return causal_trace(lm, request.text, request.subject, kinds=("mlp",)).best_layer("mlp")
