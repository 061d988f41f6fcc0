"""Causal tracing (Meng et al. 2022): where in the network a fact about a subject is carried.

The subject's token embeddings are corrupted with Gaussian noise (``noise`` x the embedding matrix's
standard deviation; the same ``samples`` draws for every run), which lowers the probability of the
answer. Then, one (layer, position) at a time, the clean run's hidden state is restored in the
corrupted run — the block output (``resid``), or the MLP / attention output over a ``window`` of
layers centred there (``mlp``, ``attn``), as in the paper — and the indirect effect is the answer's
probability then minus its corrupted probability. All restorations of one kind run as rows of a few
large batches, through the one hook layer. ``best_layer("mlp")`` is the layer ROME edits by default:
the largest MLP effect at the subject's last token.

Example::

    trace = causal_trace(lm, "Name: Ben. Gender:", "Ben")
    trace.effects["mlp"].shape        # [layers, positions]
    trace.plot("trace.png"); trace.save_json("trace.json")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from saescope.editing.request import locate_subject
from saescope.errors import SaescopeError
from saescope.model.hooks import capture, intervene
from saescope.model.loading import LoadedModel
from saescope.precision import MEASURE, dtype_name, precision_record
from saescope.storage import write_json

KINDS = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}


@dataclass
class TraceResult:
    """Indirect effects ``effects[kind]`` ``[layers, positions]`` of restoring each clean state."""

    tokens: list[str]
    subject: list[int]
    answer: str
    p_clean: float
    p_corrupt: float
    effects: dict[str, Tensor] = field(default_factory=dict)
    dtype: str = "float32"  # the precision it was measured in

    def best_layer(self, kind: str = "mlp") -> int:
        """The layer with the largest effect at the subject's last token."""
        return int(self.effects[kind][:, self.subject[-1]].argmax())

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "subject_positions": self.subject, "answer": self.answer,
                "p_clean": self.p_clean, "p_corrupt": self.p_corrupt,
                "effects": {k: v.tolist() for k, v in self.effects.items()},
                "best_layer": {k: self.best_layer(k) for k in self.effects},
                "precision": precision_record(self.dtype, MEASURE)}

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def plot(self, path: str | Path) -> Path:
        """One heat map per kind (layers across, tokens down), subject tokens starred."""
        from saescope.reports import figure, save_png

        fig, axes = figure(4.2 * len(self.effects), 0.35 * len(self.tokens) + 1.6, ncols=len(self.effects))
        axes = axes if hasattr(axes, "__len__") else [axes]
        labels = [f"{t!r}*" if i in self.subject else repr(t) for i, t in enumerate(self.tokens)]
        for ax, (kind, values) in zip(axes, self.effects.items()):
            image = ax.imshow(values.T.numpy(), aspect="auto", cmap="Purples" if kind == "resid" else
                              ("Greens" if kind == "mlp" else "Reds"))
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_xlabel("layer")
            ax.set_title(f"restoring {kind}: p({self.answer!r})", fontsize=8)
            fig.colorbar(image, ax=ax)
        return save_png(fig, path)


def causal_trace(lm: LoadedModel, prompt: str, subject: str, answer: str | None = None, noise: float = 3.0,
                 samples: int = 5, window: int = 10, kinds: tuple[str, ...] = ("resid", "mlp", "attn"),
                 seed: int = 0, rows_per_batch: int = 512) -> TraceResult:
    """Trace ``prompt`` (which contains ``subject``); the answer is the clean run's top next token unless given."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SaescopeError(f"unknown trace kind {unknown[0]!r}: use resid, mlp or attn")
    ids, subject_positions = locate_subject(lm.tokenizer, prompt, subject)
    ids_t = torch.tensor([ids], device=lm.device)
    hooks = {kind: [f"blocks.{layer}.hook_{KINDS[kind]}" for layer in range(lm.n_layers)] for kind in kinds}
    with torch.no_grad(), capture(lm.model, [h for names in hooks.values() for h in names]) as clean:
        probs = lm.model(input_ids=ids_t).logits[0, -1].float().softmax(-1)
    answer_id = int(probs.argmax()) if answer is None else _single_token(lm, answer)
    embed = lm.model.get_input_embeddings()
    scale = noise * float(embed.weight.float().std())
    generator = torch.Generator().manual_seed(seed)
    draws = (torch.randn(samples, len(subject_positions), lm.d_model, generator=generator) * scale).to(lm.device)
    result = TraceResult([lm.tokenizer.decode([i]) for i in ids], subject_positions,
                         lm.tokenizer.decode([answer_id]), float(probs[answer_id]), 0.0, dtype=dtype_name(lm.dtype))
    result.p_corrupt = _corrupted_probs(lm, ids_t, embed, subject_positions, draws, {}, [], answer_id).mean().item()
    for kind in kinds:
        configs = [(layer, pos) for layer in range(lm.n_layers) for pos in range(len(ids))]
        span = 1 if kind == "resid" else window
        out = torch.empty(len(configs))
        per_batch = max(1, rows_per_batch // samples)
        for start in range(0, len(configs), per_batch):
            chunk = configs[start:start + per_batch]
            restore = {name: clean[name] for name in hooks[kind]}
            p = _corrupted_probs(lm, ids_t, embed, subject_positions, draws, restore, chunk, answer_id, span)
            out[start:start + len(chunk)] = p.view(len(chunk), samples).mean(1).cpu()
        result.effects[kind] = out.view(lm.n_layers, len(ids)) - result.p_corrupt
    return result


@torch.no_grad()
def _corrupted_probs(lm: LoadedModel, ids: Tensor, embed: torch.nn.Module, subject: list[int], draws: Tensor,
                     clean: dict[str, Tensor], configs: list[tuple[int, int]], answer_id: int, span: int = 1) -> Tensor:
    """``[max(1, len(configs)) * samples]`` answer probabilities of corrupted runs, run ``c`` restoring the
    clean states of ``clean``'s hook points at position ``configs[c][1]`` in layers within ``span`` of ``configs[c][0]``."""
    samples = len(draws)
    n_rows = max(1, len(configs)) * samples
    subject_index = torch.tensor(subject, device=ids.device)

    def corrupt(emb: Tensor) -> Tensor:
        emb = emb.clone()
        emb[:, subject_index] += draws.repeat(n_rows // samples, 1, 1).to(emb.dtype)
        return emb

    fns = {_embedding_name(lm, embed): corrupt}
    for layer, name in enumerate(clean):
        chosen = [(c, pos) for c, (centre, pos) in enumerate(configs)
                  if centre - span // 2 <= layer < centre - span // 2 + span]
        if chosen:
            fns[name] = _restorer(clean[name], chosen, samples)
    with intervene(lm.model, fns):
        logits = lm.model(input_ids=ids.repeat(n_rows, 1)).logits[:, -1].float()
    return logits.softmax(-1)[:, answer_id]


def _restorer(clean: Tensor, chosen: list[tuple[int, int]], samples: int):
    rows = torch.tensor([c * samples + s for c, _ in chosen for s in range(samples)], device=clean.device)
    positions = torch.tensor([pos for _, pos in chosen for _ in range(samples)], device=clean.device)

    def restore(acts: Tensor) -> Tensor:
        acts = acts.clone()
        acts[rows, positions] = clean[0, positions].to(acts.dtype)
        return acts
    return restore


def _embedding_name(lm: LoadedModel, embed: torch.nn.Module) -> str:
    return next(name for name, module in lm.model.named_modules() if module is embed)


def _single_token(lm: LoadedModel, answer: str) -> int:
    ids = lm.encode(answer)
    if len(ids) != 1:
        raise SaescopeError(f"the answer {answer!r} is {len(ids)} tokens: trace a single-token answer (mind the space)")
    return ids[0]
