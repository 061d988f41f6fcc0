"""``circuit``: find the gender-pronoun circuit over the SAE suite, then ablate or cap
its stereotype nodes at every layer at once.

The metric is the pronoun read-out of the bias benchmarks, ``log P(she) - log P(he)`` at the next
token (summed over the pronoun variants), on the **selection** prompts only. Node effects
(attribution patching against zero ablation, ``circuits.attribution``, positions summed) are taken
separately over female- and male-stereotyped occupation prompts and over female and male
definitional subjects. A node carries the *stereotype* when its effect differs between the two
occupation groups (``|Δ_occ|``) by at least twice as much as between the two definitional groups
(``|Δ_def|``): it then moves the pronoun with the occupation but not with real gender. The
candidates ablate (or cap at the other group's level — here: ablate, whose strength is how many
nodes) the top 4, 8, 16, 32 of those nodes across all layers; ``SelectionScorer`` chooses as for the
other methods. Error terms are never intervened on (they are not features).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from saescope.bias.data import SelectionPrompts
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.scoring import pronoun_ids
from saescope.circuits.attribution import mean_feature_effects
from saescope.circuits.data import PairBatch
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.sae.suite import load_suite
from saescope.steering.base import Intervention
from saescope.steering.features import feature_ablation

NODE_COUNTS = (4, 8, 16, 32)


class PronounMetric:
    """``log P(she) - log P(he)`` from last-token logits (a circuits metric)."""

    __name__ = "she_minus_he"

    def __init__(self, lm: LoadedModel) -> None:
        self.she, self.he = pronoun_ids(lm)

    def __call__(self, logits: Tensor, batch: PairBatch) -> Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        return logp[:, self.she].logsumexp(-1) - logp[:, self.he].logsumexp(-1)


def stereotype_nodes(lm: LoadedModel, saes: Mapping[str, SAE], selection: SelectionPrompts) -> list[tuple[str, int, float]]:
    """``(hook, feature, Δ_occ)`` of the stereotype nodes, largest ``|Δ_occ|`` first (see the module docstring)."""
    metric = PronounMetric(lm)
    occupations = selection.occupation_prompts()
    female = mean_feature_effects(lm, saes, [p for p, fem in occupations if fem], metric)
    male = mean_feature_effects(lm, saes, [p for p, fem in occupations if not fem], metric)
    def_female = mean_feature_effects(lm, saes, [g.prompt for g in selection.definitional if g.female], metric)
    def_male = mean_feature_effects(lm, saes, [g.prompt for g in selection.definitional if not g.female], metric)
    nodes = []
    for hook in saes:
        occupation = female[hook] - male[hook]
        definitional = def_female[hook] - def_male[hook]
        stereo = (occupation.abs() >= 2 * definitional.abs()) & (occupation.abs() > 0)
        for index in torch.nonzero(stereo).flatten().tolist():
            nodes.append((hook, index, float(occupation[index])))
    return sorted(nodes, key=lambda n: -abs(n[2]))


def circuit_candidates(lm: LoadedModel, saes: Mapping[str, SAE], selection: SelectionPrompts,
                       counts: list[float] | None = None) -> list[tuple[str, list[int], Intervention]]:
    """``(label, features, intervention)``: ablate the top N stereotype nodes across all layers."""
    nodes = stereotype_nodes(lm, saes, selection)
    out = []
    for n in sorted({int(c) for c in (counts or NODE_COUNTS)}):
        chosen = nodes[:n]
        by_hook: dict[str, list[int]] = {}
        for hook, index, _ in chosen:
            by_hook.setdefault(hook, []).append(index)
        label = f"{len(chosen)} nodes over {len(by_hook)} layers"
        out.append((label, [index for _, index, _ in chosen], feature_ablation(saes, by_hook)))
    return out


@register_method("circuit")
def circuit(ctx: MethodContext) -> list[Candidate]:
    """The top N stereotype nodes (``strengths``, default 4, 8, 16, 32) of the circuit over ``config.suite``."""
    return circuit_candidates(ctx.lm, load_suite(ctx.config.suite, device=str(ctx.lm.device)), ctx.selection,
                              ctx.config.strengths)
