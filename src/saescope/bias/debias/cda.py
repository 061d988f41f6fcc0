"""``cda``: counterfactual data augmentation, the classic debiasing baseline (Zmigrod et al. 2019; the
strongest of the methods Meade et al. 2022 compared), run by the same harness as the SAE methods.

Training-split documents of the embedded corpus that mention gender are paired with their
counterfactual (``counterfactual``: pronouns, first names and gendered nouns swapped, case kept), and
the MLP output projections of a few layers (``layers``; default the SAE's layer and the next three even
ones) are fine-tuned on both with the language-modelling loss (Adam). Snapshots after ``strengths``
steps (default 16 and 32) are the candidates, each a ``WeightDelta`` (saved as ``edit/``, undone
exactly); the model itself is left as it was. Nothing of the evaluation data is used.
"""

from __future__ import annotations

import re

import torch

from saescope.bias.debias.erase import erase_layers
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.shift.core import gender_swapped
from saescope.corpus import load_corpus
from saescope.editing.rome import edit_module
from saescope.editing.weight_delta import WeightDelta
from saescope.errors import SaescopeError
from saescope.model.hooks import resolve_hook
from saescope.model.loading import LoadedModel

CDA_STEPS = (16, 32)
LR, BATCH, CONTEXT, DOCUMENTS = 5e-5, 8, 128, 256
PAIRS = {"man": "woman", "men": "women", "boy": "girl", "boys": "girls", "father": "mother",
         "fathers": "mothers", "son": "daughter", "sons": "daughters", "brother": "sister", "brothers": "sisters",
         "husband": "wife", "husbands": "wives", "king": "queen", "kings": "queens", "uncle": "aunt",
         "nephew": "niece", "male": "female", "males": "females", "mr": "mrs", "himself": "herself",
         "gentleman": "lady", "gentlemen": "ladies", "actor": "actress", "actors": "actresses"}
SWAP = {**PAIRS, **{v: k for k, v in PAIRS.items()}}
WORDS = re.compile(r"\b(" + "|".join(sorted(SWAP, key=len, reverse=True)) + r")\b", re.IGNORECASE)
GENDERED = re.compile(r"\b(he|she|him|her|his|hers|" + "|".join(SWAP) + r")\b", re.IGNORECASE)


def counterfactual(text: str) -> str:
    """``text`` about the other gender: gendered nouns (case kept), then pronouns and first names."""
    def swap(match: re.Match) -> str:
        word = match.group(1)
        new = SWAP[word.lower()]
        return new.capitalize() if word[0].isupper() else new
    return gender_swapped(WORDS.sub(swap, text))


def counterfactual_windows(lm: LoadedModel, documents: int = DOCUMENTS, context: int = CONTEXT) -> torch.Tensor:
    """``[n, context]`` token windows of gendered training documents and of their counterfactuals, interleaved."""
    texts = [d.text for d in load_corpus("embedded", "train") if GENDERED.search(d.text)][:documents]
    if not texts:
        raise SaescopeError("no training document mentions gender: nothing to augment")
    rows = []
    for text in texts:
        for version in (text, counterfactual(text)):
            ids = lm.encode(version, start=True)[:context]
            if len(ids) == context:
                rows.append(ids)
    return torch.tensor(rows)


def fine_tune(lm: LoadedModel, modules: list[str], windows: torch.Tensor, snapshots: list[int],
              lr: float = LR, batch: int = BATCH) -> dict[int, dict[str, torch.Tensor]]:
    """``{steps: {module: weight change}}`` after each of ``snapshots`` Adam steps on ``windows``; the
    model's weights and gradient flags are restored whatever happens."""
    named = dict(lm.model.named_modules())
    weights = [named[m].weight for m in modules]
    originals = [w.detach().clone() for w in weights]
    flags = {p: p.requires_grad for p in lm.model.parameters()}
    out: dict[int, dict[str, torch.Tensor]] = {}
    try:
        lm.model.requires_grad_(False)
        for weight in weights:
            weight.requires_grad_(True)
        optimiser = torch.optim.Adam(weights, lr=lr)
        generator = torch.Generator().manual_seed(0)
        with torch.enable_grad():
            for step in range(1, max(snapshots) + 1):
                rows = windows[torch.randint(len(windows), (batch,), generator=generator)].to(lm.device)
                loss = lm.model(input_ids=rows, labels=rows).loss
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if step in snapshots:
                    out[step] = {m: (w.detach() - o).float().cpu() for m, w, o in zip(modules, weights, originals)}
    finally:
        with torch.no_grad():
            for weight, original in zip(weights, originals):
                weight.copy_(original)
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)
    return out


@register_method("cda")
def cda(ctx: MethodContext) -> list[Candidate]:
    """Fine-tune the MLP output projections of the candidate layers on counterfactual pairs; one
    candidate per step count in ``strengths``."""
    layers = [resolve_hook(ctx.lm.model, h).layer for h in erase_layers(ctx.lm, ctx.hook, ctx.config.layers)]
    modules = [edit_module(ctx.lm, int(layer)) for layer in layers]
    steps = sorted({int(s) for s in (ctx.config.strengths or CDA_STEPS)})
    if steps[0] < 1:
        raise SaescopeError(f"cda strengths are step counts (at least 1), got {steps[0]}")
    windows = counterfactual_windows(ctx.lm)
    snapshots = fine_tune(ctx.lm, modules, windows, steps)
    info = {"method": "cda", "layers": layers, "lr": LR, "batch": BATCH, "windows": len(windows)}
    return [(f"{n} steps, layers {','.join(map(str, layers))}", [], WeightDelta(snapshots[n], {**info, "steps": n}))
            for n in steps]
