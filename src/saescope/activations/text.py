"""The one door from texts to activations: tokenize (one policy), pad, run the model up to the last hook
point asked for, and read each text's activations the way the caller needs.

Tokenization policy (``model.likelihood.encode_texts``): a text's own tokens, no special tokens added by
the tokenizer, and with ``start=True`` the model's document-start token in front (``document_start_id``:
the same first token for every text, so position 0, the attention sink, is never one of the text's own
tokens). Every reader excludes attention sinks (``read.sink_mask``) and padding: ``mean`` and
``tokens`` leave them out, and ``last`` or a position that falls on a sink (a one-token text read
without ``start=True``: its only token is position 0) is an error, never a silent read of the sink.

``read``:
- ``"last"``: ``[n, d]``, each text's last token;
- ``"mean"``: ``[n, d]``, the mean over each text's kept tokens (sinks, padding and the start token left out);
- ``"tokens"``: a list of ``(acts [T, d], keep [T])`` per text, padding cut off;
- a list of ints: ``[n, d]``, each text's activation at its own position (negative counts from the end).

Example (steering-vectors' ``extract_activations(..., read_token_index=-1)`` is the model)::

    acts = text_activations(lm, "blocks.12.hook_resid_post", ["The nurse", "The king"], read="last")
    both = text_activations(lm, [h6, h9], texts, read="mean")      # {hook: [n, d]}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from saescope.activations.read import hooks_activations
from saescope.errors import SaescopeError
from saescope.model.hooks import Applicable, applied
from saescope.model.likelihood import document_start_id, encode_texts, pad_id
from saescope.model.loading import LoadedModel, pad_rows

READS = ("last", "mean", "tokens")
Read = str | Sequence[int]


def text_activations(lm: LoadedModel, hooks: str | list[str], texts: list[str], read: Read = "last",
                     batch_size: int = 32, start: bool = False, intervention: Applicable | None = None,
                     transform: Callable[[Tensor], Tensor] | None = None) -> Tensor | dict[str, Tensor] | list:
    """Activations of ``texts`` at ``hooks`` (one hook point: its result; several: ``{hook: result}``),
    read as ``read`` says (module docstring), float32 on the CPU. ``intervention`` is applied during the
    forward passes; ``transform`` maps the activations first (e.g. to some SAE features)."""
    names = [hooks] if isinstance(hooks, str) else list(hooks)
    if isinstance(read, str) and read not in READS:
        raise SaescopeError(f"unknown read {read!r}: use one of {', '.join(READS)} or a list of positions")
    if not isinstance(read, str) and len(read) != len(texts):
        raise SaescopeError(f"read gives {len(read)} positions for {len(texts)} texts")
    rows = encode_texts(lm, texts, prefix=[document_start_id(lm)] if start else None)
    out: dict[str, list] = {hook: [] for hook in names}
    with applied(intervention, lm):
        for first in range(0, len(rows), batch_size):
            chunk = rows[first:first + batch_size]
            ids, mask = pad_rows(chunk, pad_id(lm), lm.device)
            lengths = torch.tensor([len(r) for r in chunk], device=lm.device)
            where = None if isinstance(read, str) else _positions(read[first:first + batch_size], lengths)
            for hook, (acts, keep) in hooks_activations(lm, names, ids, mask).items():
                acts = transform(acts.float()) if transform is not None else acts.float()
                out[hook].extend(_read(acts, keep, lengths, read, where))
    result = {hook: values if read == "tokens" else torch.stack(values) for hook, values in out.items()}
    return result[names[0]] if isinstance(hooks, str) else result


def _positions(positions: Sequence[int], lengths: Tensor) -> Tensor:
    where = torch.tensor(list(positions), device=lengths.device)
    where = torch.where(where < 0, lengths + where, where)
    if ((where < 0) | (where >= lengths)).any():
        raise SaescopeError("a read position lies outside its text")
    return where


def _read(acts: Tensor, keep: Tensor, lengths: Tensor, read: Read, where: Tensor | None) -> list:
    rows = torch.arange(len(acts), device=acts.device)
    if read == "last":
        where = lengths - 1
    if read == "mean":
        weights = keep.float()[..., None]
        return list(((acts * weights).sum(1) / weights.sum(1).clamp_min(1)).cpu())
    if read == "tokens":
        return [(acts[i, :n].cpu(), keep[i, :n].cpu()) for i, n in enumerate(lengths.tolist())]
    sinks = (~keep[rows, where]).nonzero().flatten().tolist()
    if sinks:
        raise SaescopeError(f"the read position of {len(sinks)} text(s) is an attention sink (position "
                            f"{int(where[sinks[0]])} of text {sinks[0]} of the batch): read with start=True")
    return list(acts[rows, where].cpu())
