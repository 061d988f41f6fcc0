"""``graph``: ablate the transcoder features that attribution graphs show writing the stereotype.

The worked example of docs/guides/attribution_graphs.md found it: with the default transcoder set, the
direct effect of "The nurse said that" on ``logit(she) − logit(he)`` comes from features at the noun in
layers 20–29 (+0.86) and from features at " that" that every prompt shares (the templates' own lean).
This method turns that reading into a candidate, on the **selection** prompts only:

1. for every training occupation prompt and every definitional prompt, the direct effect of each active
   transcoder feature on ``logit(she) − logit(he)`` (``circuits.attribution_graph.logit_rows``: one forward
   and one backward pass per prompt), summed per feature ``(layer, id)`` over the prompt's positions;
2. ``Δ_occ``: its mean on female- minus male-stereotyped occupation prompts; ``Δ_def``: the same on female
   minus male definitional subjects (a feature absent from a prompt contributes 0);
3. a feature carries the stereotype when it pushes towards the stereotyped pronoun (``Δ_occ > 0``) at
   least twice as much as it separates real gender (``Δ_occ ≥ 2·|Δ_def|``, the rule of ``circuit``);
   ranked by ``Δ_occ − |Δ_def|``;
4. the candidates ablate the top 4, 8, 16, 32 of them at every position (``FeatureSteering`` with the
   transcoder of each layer: read at the MLP input, the change written at the MLP output), chosen by the
   same ``SelectionScorer`` as every method.

``--transcoders`` names the set (default: the cached default set, ``saescope transcoders train``). The
method is not in ``auto`` unless asked for (``--methods``), since it needs a trained set.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.scoring import pronoun_ids
from saescope.errors import SaescopeError
from saescope.steering.base import Interventions
from saescope.steering.features import FeatureEdit, FeatureSteering

FEATURE_COUNTS = (4, 8, 16, 32)


def direct_effects(ctx: MethodContext, transcoders, prompt: str, she: int, he: int) -> dict[tuple[int, int], float]:
    """Each active feature's direct effect on logit(she) − logit(he) for ``prompt``, summed over positions."""
    from saescope.circuits.attribution_graph import logit_rows

    ids = torch.tensor(ctx.lm.encode(prompt), device=ctx.lm.device)
    features, rows = logit_rows(ctx.lm.model, transcoders, ids, [she, he])
    difference = rows[0, :len(features)] - rows[1, :len(features)]
    out: dict[tuple[int, int], float] = defaultdict(float)
    for (layer, _position, feature), value in zip(features.tolist(), difference.tolist()):
        out[(layer, feature)] += value
    return out


def stereotype_features(ctx: MethodContext, transcoders) -> list[tuple[int, int, float]]:
    """``(layer, feature, Δ_occ − |Δ_def|)`` of the stereotype features (module docstring), strongest first."""
    she, he = (ids[0] for ids in pronoun_ids(ctx.lm))
    groups: dict[str, list[dict[tuple[int, int], float]]] = defaultdict(list)
    for prompt, female in ctx.selection.occupation_prompts():
        groups["occupation_female" if female else "occupation_male"].append(direct_effects(ctx, transcoders, prompt, she, he))
    for item in ctx.selection.definitional:
        groups["definitional_female" if item.female else "definitional_male"].append(
            direct_effects(ctx, transcoders, item.prompt, she, he))
    if len(groups) < 4:
        raise SaescopeError("the graph method needs female and male occupation and definitional selection prompts")

    def mean(group: str, key: tuple[int, int]) -> float:
        return sum(effects.get(key, 0.0) for effects in groups[group]) / len(groups[group])

    keys = {key for effects in groups["occupation_female"] + groups["occupation_male"] for key in effects}
    found = []
    for key in keys:
        occupation = mean("occupation_female", key) - mean("occupation_male", key)
        definitional = abs(mean("definitional_female", key) - mean("definitional_male", key))
        if occupation > 0 and occupation >= 2 * definitional:
            found.append((key[0], key[1], occupation - definitional))
    return sorted(found, key=lambda item: -item[2])


def ablation(transcoders, chosen: list[tuple[int, int, float]]) -> Interventions:
    """Zero the ``chosen`` transcoder features at every position, one ``FeatureSteering`` per layer."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, feature, _ in chosen:
        by_layer[layer].append(feature)
    return Interventions([FeatureSteering(transcoders[layer], [FeatureEdit(f, "ablate", 0.0) for f in features])
                          for layer, features in sorted(by_layer.items())])


@register_method("graph")
def graph(ctx: MethodContext) -> list[Candidate]:
    """Ablate the top 4, 8, 16, 32 stereotype transcoder features found by attribution (module docstring)."""
    from saescope.sae.transcoders import load_set

    transcoders = load_set(ctx.config.transcoders, ctx.lm.name, str(ctx.lm.device))
    transcoders.check_model(ctx.lm)
    found = stereotype_features(ctx, transcoders)
    if not found:
        raise SaescopeError("no transcoder feature carries the stereotype on the selection prompts")
    counts = sorted({min(int(n), len(found)) for n in (ctx.config.strengths or FEATURE_COUNTS)})
    return [(f"{n} transcoder features", [f for _, f, _ in found[:n]], ablation(transcoders, found[:n]))
            for n in counts if n > 0]
