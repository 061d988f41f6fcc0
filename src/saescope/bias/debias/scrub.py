"""``scrub``: **read-out erasure at every layer from the embedding up, sparing gendered words.**

Why ``erase`` stops halfway: it erases at one layer, at or after the SAE's layer, because its
``FeatureGate`` runs there. The occupation's stereotyped gender, however, is written from block 0 on:
- the stereotype trace puts 76 % of the gap in MLP 0's output at the occupation token;
- later MLPs rewrite what one layer's erasure removed.

``scrub`` therefore erases at every layer ``0..end``, each layer with its own ``erase`` direction:
- the mean gradient of log P(she)/P(he) with respect to the occupation token's residual, over the
  training occupation prompts, anchored at the corpus mean.
- A sequential erasure over layers is the "concept scrubbing" of Belrose et al. 2023, with the
  read-out direction as the concept.

The gate cannot be an SAE at layer 12, so it is a ``TokenGate`` on the token ids:
- it leaves alone the words whose gender is part of their meaning, and first names (the shipped
  ``gendered`` lexicon, plus ``preserve``);
- it also leaves alone each sequence's first token, the attention sink.
- A definitional word keeps its gender; what a stereotyped word carries is erased.
- From ``SPARE_AFTER_FRACTION`` of the depth on (layer 17 of 30), it also leaves alone every token
  after a gendered word (``TokenGate(after=True)``). By then the later positions have read the word,
  and a sentence without one is still scrubbed at every position. That includes the last position,
  where the template's own lean toward one pronoun sits.

On training data (selection occupations for the directions; the disjoint ``fit_*`` occupations held
out), the ``end`` layer trades bias cut against definitional cost:
- the last position reads the occupation at layers 24-28;
- scrubbing up to there also erases, at the later positions, the gender they have already read from a
  definitional word.

Candidates: ``end`` in ``layers`` (default: 40, 55, 70, 80 and 90 % of the depth: 12, 16, 21, 24 and 27
on SmolLM2's 30 layers), each at ``strengths`` (default 1). The selection rule of ``plan_debias`` picks
one. Known gap: a definitional word missing from the lexicon, such as an unusual title, is erased
like any other word. Give such words with ``preserve``.
"""

from __future__ import annotations

import torch

from saescope.bias.debias.erase import corpus_means, readout_directions
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.errors import SaescopeError
from saescope.model.hooks import resolve_hook
from saescope.steering import Interventions, SubspaceErasure, TokenGate

END_FRACTIONS = (0.4, 0.55, 0.7, 0.8, 0.9)
SPARE_AFTER_FRACTION = 0.55
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


@register_method("scrub")
def scrub(ctx: MethodContext) -> list[Candidate]:
    """One scrubbing per candidate end layer (and strength), sparing the gendered lexicon and ``preserve``."""
    ends = scrub_ends(ctx.lm.n_layers, ctx.config.layers)
    words, after = TokenGate("gendered", ctx.config.preserve), TokenGate("gendered", ctx.config.preserve, after=True)
    late = round(SPARE_AFTER_FRACTION * ctx.lm.n_layers)
    hooks = [resolve_hook(ctx.lm.model, f"blocks.{layer}.hook_resid_post").name for layer in range(max(ends) + 1)]
    gates = [words if layer <= late else after for layer in range(len(hooks))]
    top = ctx.lm.n_layers - 1  # no later position reads the last block's output: only "+last" acts there
    directions = readout_directions(ctx.lm, [h for h in hooks if resolve_hook(ctx.lm.model, h).layer < top], ctx.selection)
    means, deep = corpus_means(ctx.lm, hooks), hooks[late + 1:]
    last = readout_directions(ctx.lm, deep, ctx.selection, at="last") if deep else {}
    both = {**directions, **{hook: torch.stack([directions[hook], last[hook]]) if hook in directions else last[hook]
                             for hook in deep}}
    return [(f"0-{end}{suffix} x{fraction:g}", [], scrubbing(hooks[:end + 1], chosen, means, gates[:end + 1], fraction))
            for end in ends for suffix, chosen in (("", directions), (" +last", both))
            if (suffix == "" and end < top) or (suffix and end > late)
            for fraction in ctx.config.strengths or SCRUB_FRACTIONS]
