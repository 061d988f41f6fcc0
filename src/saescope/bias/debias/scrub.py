"""``scrub``: **read-out erasure at every layer from the embedding up, sparing gendered words.**

Why ``erase`` stops halfway:
- It erases at one layer, at or after the SAE's layer, because its ``FeatureGate`` runs there.
- The occupation's stereotyped gender is written from block 0 on. The stereotype trace puts 76 % of
  the gap in MLP 0's output at the occupation token.
- Later MLPs rewrite what one layer's erasure removed.

``scrub`` therefore erases at every layer ``0..end``, each layer with its own ``erase`` direction:
- the mean gradient of log P(she)/P(he) with respect to the occupation token's residual, over the
  training occupation prompts, anchored at the corpus mean;
- a sequential erasure over layers, as in the "concept scrubbing" of Belrose et al. 2023, with the
  read-out direction as the concept.

The gate is a ``TokenGate`` on the token ids, because an SAE gate at layer 12 cannot act before layer 12:
- **Up to a ``late`` layer**, it leaves alone the words whose gender is part of their meaning, first
  names (the shipped ``gendered`` lexicon, plus ``preserve``), and each sequence's first token (the
  attention sink). A definitional word keeps its gender; a stereotyped word's is erased.
- **Beyond ``late``**, it also leaves alone every token after a gendered word (``after=True``):
  - by then the later positions have read that word, and its gender is legitimate there;
  - a sentence with no gendered word is still scrubbed at every position, the last one included.
- **``+last``** candidates also erase there, beyond ``late``, the direction the pronoun is read from
  at the last token (``readout_directions(at="last")``). This removes the template's own lean
  toward one pronoun ("The X was late because" → he), which no occupation direction carries.

Candidates:
- ``end`` in ``layers``; default 40, 55, 70, 80 and 90 % of the depth: 12, 16, 21, 24 and 27 of
  SmolLM2's 30 layers.
- ``late`` at 55 or 70 % of the depth: 16 or 21.
- With and without ``+last``, at each of ``strengths`` (default 1).
- ``plan_debias``'s rule picks one on training prompts.

Measured on training data only (docs/results/figures.md):
- the selection occupations fit the directions; the disjoint ``fit_*`` occupations are held out.
- Deeper ``end`` cuts more of the held-out stereotype.
- Without the ``after`` gate, deeper ``end`` costs definitional accuracy.

Known gap: a definitional word missing from the lexicon (an unusual title, a rare name) is scrubbed
like any other word. Give such words with ``preserve``.
"""

from __future__ import annotations

import torch

from saescope.bias.debias.erase import corpus_means, readout_directions
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.errors import SaescopeError
from saescope.model.hooks import resolve_hook
from saescope.steering import Interventions, SubspaceErasure, TokenGate
from saescope.steering.token_gate import MAX_TOKENS

END_FRACTIONS = (0.4, 0.55, 0.7, 0.8, 0.9)
SPARE_AFTER_FRACTIONS = (0.55, 0.7)
SCRUB_FRACTIONS = (1.0,)


def scrub_ends(n_layers: int, layers: list[int] | None) -> list[int]:
    """The candidate last layers: ``layers`` (each checked), or ``END_FRACTIONS`` of the depth."""
    if layers is None:
        return sorted({min(n_layers - 1, round(f * n_layers)) for f in END_FRACTIONS})
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise SaescopeError(f"scrub layer {bad[0]} is out of range: the model has {n_layers} layers (0-{n_layers - 1})")
    return sorted(set(layers))


def scrubbing(hooks: list[str], directions: dict, means: dict, gates: list[TokenGate],
              strength: float = 1.0) -> Interventions:
    """One gated erasure per hook point (``gates[i]`` at ``hooks[i]``), applied together."""
    return Interventions([SubspaceErasure(hook, directions[hook], means[hook], strength, name="gender-scrub", gate=gate)
                          for hook, gate in zip(hooks, gates, strict=True)])


def _variants(ends: list[int], lates: list[int], top: int) -> list[tuple[int, int, bool]]:
    """``(end, late, plus_last)`` of every distinct candidate: the gate spares words up to ``late`` and
    everything after a word beyond it; ``plus_last`` adds the last token's direction beyond ``late``; the
    top block's output is read by no later position, so only ``plus_last`` acts there."""
    out = []
    for end in ends:
        for late in lates:
            late = min(late, end)
            for plus in (False, True):
                if (plus and end > late) or (not plus and end < top):
                    out.append((end, late, plus))
    return sorted(set(out))


@register_method("scrub")
def scrub(ctx: MethodContext) -> list[Candidate]:
    """One scrubbing per candidate (end layer, spare-after layer, +last; and strength), sparing the
    gendered lexicon and ``preserve``."""
    lm, n, top = ctx.lm, ctx.lm.n_layers, ctx.lm.n_layers - 1
    ends = scrub_ends(n, ctx.config.layers)
    lates = sorted({round(f * n) for f in SPARE_AFTER_FRACTIONS})
    variants = _variants(ends, lates, top)
    words, after = TokenGate("gendered", ctx.config.preserve), TokenGate("gendered", ctx.config.preserve, after=True)
    too_long = words.unmatched(lm)
    if too_long:
        raise SaescopeError(f"preserve word {too_long[0]!r} is more than {MAX_TOKENS} tokens for {lm.name}'s tokenizer "
                            "in every casing: the gate cannot match it (give a shorter form)")
    hooks = [resolve_hook(lm.model, f"blocks.{layer}.hook_resid_post").name for layer in range(max(ends) + 1)]
    occupation = readout_directions(lm, hooks[:top], ctx.selection)
    deep = hooks[min(late for _, late, plus in variants if plus) + 1:] if any(p for *_, p in variants) else []
    last = readout_directions(lm, deep, ctx.selection, at="last") if deep else {}
    means = corpus_means(lm, hooks)

    def basis(layer: int, late: int, plus: bool) -> torch.Tensor:
        hook = hooks[layer]
        if not (plus and layer > late):
            return occupation[hook]
        return torch.stack([occupation[hook], last[hook]]) if hook in occupation else last[hook]

    out: list[Candidate] = []
    for end, late, plus in variants:
        layers = range(end + 1)
        directions = {hooks[layer]: basis(layer, late, plus) for layer in layers}
        gates = [words if layer <= late else after for layer in layers]
        label = f"0-{end}{' +last' if plus else ''}{f' after {late}' if late < end else ''}"
        out += [(f"{label} x{fraction:g}", [], scrubbing(hooks[:end + 1], directions, means, gates, fraction))
                for fraction in ctx.config.strengths or SCRUB_FRACTIONS]
    return out
