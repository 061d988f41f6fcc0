"""ROME's keys and new values for many requests at once (the gender-vector study edits hundreds).

Each request ``r`` has its own value change ``δ_r``; its rows (the prompt behind every prefix, and
the essence prompt "{subject} is a") see only their own ``δ_r``, and the loss is the sum of the
requests' losses. Adam works coordinate by coordinate, so every ``δ_r`` follows exactly the path it
would follow alone; a request leaves the batch once its target loss is under ``STOP_NLL`` (its
rows are no longer run), so a batch costs what its slowest request costs, on fewer and fewer rows.
Logits are computed only where the loss reads them (the LM head is a quarter of the model on short
prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.editing.config import RomeConfig
from saescope.editing.request import EditRequest, locate_subject
from saescope.errors import SaescopeError
from saescope.model.hooks import forward_until, intervene
from saescope.model.likelihood import final_hidden, head_logits, logits_at, pad_id
from saescope.model.loading import LoadedModel, pad_rows

STOP_NLL = 0.05  # a request is done once the target's mean negative log-likelihood is under this


@dataclass
class RequestRows:
    """One request's token rows: ``prefix + prompt + target[:-1]`` for each prefix, then the essence row."""

    rows: list[list[int]]
    subject_at: list[int]  # the subject's last token in each row (the essence row last)
    labels: list[tuple[int, int, int]]  # (row, position, wanted token) of the target's tokens


def request_rows(lm: LoadedModel, request: EditRequest, prefixes: list[str]) -> RequestRows:
    """The rows of ``request`` behind each of ``prefixes`` (``""`` for the prompt alone)."""
    target = lm.encode(request.target)
    if not target:
        raise SaescopeError(f"the target {request.target!r} has no tokens")
    rows, subject_at, labels = [], [], []
    for i, prefix in enumerate(prefixes):
        ids, positions = locate_subject(lm.tokenizer, request.text, request.subject, prefix)
        rows.append(ids + target[:-1])
        subject_at.append(positions[-1])
        labels += [(i, len(ids) - 1 + t, token) for t, token in enumerate(target)]
    essence, positions = locate_subject(lm.tokenizer, f"{request.subject} is a", request.subject)
    return RequestRows(rows + [essence], subject_at + [positions[-1]], labels)


@torch.no_grad()
def subject_keys(lm: LoadedModel, layer: int, rows: list[list[int]], subject_at: list[int],
                 batch_size: int = 64) -> Tensor:
    """``[rows, d_ff]`` float32 inputs of layer ``layer``'s MLP output projection at the subject's last token."""
    hook = f"blocks.{layer}.hook_mlp_post"
    out = []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_rows(rows[start:start + batch_size], pad_id(lm), lm.device)
        acts = forward_until(lm.model, [hook], ids, mask)[hook]
        out.append(acts[torch.arange(len(ids)), torch.tensor(subject_at[start:start + batch_size])].float().cpu())
    return torch.cat(out)


class _Batch:
    """The active requests' rows padded together, with each row's owner and the label indices."""

    def __init__(self, lm: LoadedModel, items: list[RequestRows], active: list[int]) -> None:
        rows, subject_at, owner, labels, essence, self.first_row = [], [], [], [], [], []
        for slot, r in enumerate(active):
            base = len(rows)
            self.first_row.append(base)
            rows += items[r].rows
            subject_at += items[r].subject_at
            owner += [r] * len(items[r].rows)
            labels += [(base + row, at, token, slot) for row, at, token in items[r].labels]
            essence.append((base + len(items[r].rows) - 1, len(items[r].rows[-1]) - 1))
        device = lm.device
        self.ids, self.mask = pad_rows(rows, pad_id(lm), device)
        self.subject = torch.tensor(subject_at, device=device)
        self.owner = torch.tensor(owner, device=device)
        self.label_row, self.label_at, self.wanted, self.label_slot = (
            torch.tensor(c, device=device) for c in zip(*labels))
        self.essence_row, self.essence_at = (torch.tensor(c, device=device) for c in zip(*essence))
        self.active = torch.tensor(active, device=device)


def optimise_values(lm: LoadedModel, module: str, requests: list[EditRequest], prefixes: list[str],
                    config: RomeConfig, progress: bool = False) -> tuple[Tensor, Tensor, list[list[float]]]:
    """``(δ [R, d_model], the original values at the subject in each plain prompt [R, d_model], each
    request's target-loss history)``: the change of ``module``'s output at the subject's last token
    that makes each request's target follow its prompt behind every prefix."""
    items = [request_rows(lm, request, prefixes) for request in requests]
    batch = _Batch(lm, items, list(range(len(requests))))
    captured: dict[str, Tensor] = {}
    with torch.no_grad(), intervene(lm.model, {module: lambda out: captured.setdefault("v", out)}):
        hidden = final_hidden(lm, batch.ids, batch.mask)
        essence_init = (head_logits(lm, hidden[batch.essence_row, batch.essence_at]) if hidden is not None else
                        logits_at(lm, batch.ids, batch.mask, batch.essence_row, batch.essence_at)).log_softmax(-1)
    firsts = torch.tensor(batch.first_row, device=lm.device)
    v_init = captured["v"][firsts, batch.subject[firsts]].float().detach()
    delta = torch.zeros(v_init.shape, device=lm.device, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=config.lr)
    final = torch.zeros_like(v_init)
    history: list[list[float]] = [[] for _ in requests]
    active = list(range(len(requests)))
    for _ in tqdm(range(config.steps), desc="ROME values", disable=not progress):
        batch = _Batch(lm, items, active)
        before = delta.detach().clone()
        nll = _step(lm, module, batch, delta, v_init, essence_init, optimiser, config)
        done = []
        for r, value in zip(active, nll.tolist()):
            history[r].append(value)
            if value < STOP_NLL:
                final[r] = before[r]
                done.append(r)
        active = [r for r in active if r not in done]
        if not active:
            break
        _clamp(delta, v_init, config.clamp_norm)
    for r in active:
        final[r] = delta.detach()[r]
    return final, v_init, history


def _step(lm: LoadedModel, module: str, batch: _Batch, delta: Tensor, v_init: Tensor, essence_init: Tensor,
          optimiser: torch.optim.Optimizer, config: RomeConfig) -> Tensor:
    """One Adam step on the active requests; returns their target losses before the step."""
    def add_delta(out: Tensor) -> Tensor:
        out = out.clone()
        rows = torch.arange(len(out), device=out.device)
        out[rows, batch.subject] = out[rows, batch.subject] + delta[batch.owner].to(out.dtype)
        return out

    with torch.enable_grad(), intervene(lm.model, {module: add_delta}):
        rows = torch.cat([batch.label_row, batch.essence_row])
        positions = torch.cat([batch.label_at, batch.essence_at])
        logp = logits_at(lm, batch.ids, batch.mask, rows, positions).log_softmax(-1)
        n_labels = len(batch.label_row)
        token_nll = -logp[:n_labels].gather(1, batch.wanted[:, None])[:, 0]
        index = batch.label_slot  # each label's request, as its place among the active ones
        nll = torch.zeros(len(batch.active), device=lm.device).index_add(0, index, token_nll)
        nll = nll / torch.bincount(index, minlength=len(batch.active)).clamp(min=1)
        now = logp[n_labels:]
        kl = (now.exp() * (now - essence_init[batch.active])).sum(-1)  # KL(edited || original)
        chosen = delta[batch.active]
        decay = chosen.norm(dim=-1) / v_init[batch.active].pow(2).sum(-1)  # as the ROME code: ||δ|| / ||v||²
        loss = (nll + config.kl_weight * kl + config.weight_decay * decay).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return nll.detach()


@torch.no_grad()
def _clamp(delta: Tensor, v_init: Tensor, clamp_norm: float) -> None:
    """Keep each ``||δ_r||`` within ``clamp_norm`` x ``||v_r||``."""
    limit = clamp_norm * v_init.norm(dim=-1, keepdim=True)
    delta.mul_(torch.where(delta.norm(dim=-1, keepdim=True) > limit, limit / delta.norm(dim=-1, keepdim=True), 1.0))
