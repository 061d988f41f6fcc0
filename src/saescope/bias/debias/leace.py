"""``leace``: LEACE (Belrose et al. 2023) with the real library, EleutherAI's ``concept-erasure``.

At each candidate layer (those of ``erase``: the SAE's layer and a few after it, or ``layers``), the
residual of the occupation token of every training occupation prompt is read (``text_activations``,
after the document-start token), labelled by the occupation's stereotyped gender (female- or male-
stereotyped training occupation), and ``LeaceEraser.fit`` gives the least-squares eraser of that
concept: no linear probe can then tell the two groups apart at that layer, at the least change of
the residual. It runs as an oblique ``SubspaceErasure`` (``x - ((x - bias) R^T) U``), gated like
``erase``: tokens where a definitional-gender gate feature fires are left alone. Candidates: one per
layer (and ``strengths``: fractions of the erasure, default 1).

``erase`` removes the direction the pronoun read-out *uses*; ``leace`` removes what *separates*
the two groups of occupations. The selection table puts both on the same scale at equal layers.
"""

from __future__ import annotations

import torch

from saescope.activations.text import text_activations
from saescope.bias.debias.erase import ERASE_FRACTIONS, definitional_gate, erase_layers
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.gender_features import occupation_prefixes
from saescope.errors import SaescopeError
from saescope.steering import SubspaceErasure


def leace_eraser(x: torch.Tensor, z: torch.Tensor):
    """``concept_erasure.LeaceEraser`` fitted on ``x`` [n, d] with binary labels ``z`` [n] (both classes needed)."""
    from concept_erasure import LeaceEraser

    classes = sorted(set(z.tolist()))
    if len(classes) != 2:
        raise SaescopeError(f"LEACE needs examples of both classes to erase a concept, got classes {classes}")
    return LeaceEraser.fit(x.double(), z.long())


@register_method("leace")
def leace(ctx: MethodContext) -> list[Candidate]:
    """One gated LEACE erasure per candidate layer, fitted on the training occupation prompts."""
    gate_ids, gate = definitional_gate(ctx)
    female, male = occupation_prefixes(ctx.selection, True), occupation_prefixes(ctx.selection, False)
    layers = erase_layers(ctx.lm, ctx.hook, ctx.config.layers)
    acts = text_activations(ctx.lm, layers, female + male, read="last", start=True)
    labels = torch.tensor([1] * len(female) + [0] * len(male))
    out = []
    for layer in layers:
        eraser = leace_eraser(acts[layer], labels)
        write, read, bias = eraser.proj_left.T.float(), eraser.proj_right.float(), eraser.bias.float()
        for fraction in ctx.config.strengths or ERASE_FRACTIONS:
            out.append((f"{layer} x{fraction:g}", gate_ids, SubspaceErasure(
                layer, write, bias, fraction, name="gender-leace", gate=gate, read=read)))
    return out
