"""The gender-vector study's comparisons and side effects: the bias module's own gender directions
(CAA and SAE features), same-seed generations, and occupation/definitional bias under an edit."""

from __future__ import annotations

import torch
from torch import Tensor

from saescope.bias.debias.steer import female_direction
from saescope.bias.gender_vector.names import male_margins
from saescope.editing.rome import SubjectUpdate
from saescope.editing.weight_edit import WeightEdit
from saescope.model.generation import generate
from saescope.model.loading import LoadedModel
from saescope.sae.formats import load_sae

DEFINITIONAL_FEATURES = 8  # SAE features in the feature direction


def _default_sae(lm: LoadedModel):
    sae = load_sae("default")
    return sae.to(lm.device), sae.cfg.hook_name


def caa_direction(lm: LoadedModel) -> Tensor:
    """Unit female-minus-male CAA vector over the training gender pairs, at the default SAE's hook."""
    sae, hook = _default_sae(lm)
    return female_direction(lm, sae, hook, None, None)


def sae_feature_direction(lm: LoadedModel) -> Tensor:
    """Unit sum of the decoder directions of the default SAE's strongest definitional-gender features,
    each signed so it points female-wards (``bias.gender_features``)."""
    from saescope.bias.gender_features import rank_gender_features

    sae, hook = _default_sae(lm)
    table = rank_gender_features(lm, sae, hook)
    features = [int(f) for f in table.feature[table.kind == "definitional"].head(DEFINITIONAL_FEATURES)]
    return female_direction(lm, sae, hook, table, features)


def generations(lm: LoadedModel, updates: list[SubjectUpdate], vector: Tensor, seed: int = 0,
                max_new_tokens: int = 24) -> list[dict]:
    """For each name: "Name: X. Gender:" continued with the same seed without and with the edit
    that adds ``vector`` at the name, and the model's gender answer both times."""
    shown = []
    for update in updates:
        prompt = update.request.text
        edit = update.edit(vector)
        plain = generate(lm, [prompt], None, max_new_tokens, 0.8, 1, seed)[0][0]
        edited = generate(lm, [prompt], edit, max_new_tokens, 0.8, 1, seed)[0][0]
        with torch.no_grad(), edit.apply(lm):
            margin_after = float(male_margins(lm, [update.request.subject])[0])
        shown.append({"name": update.request.subject, "prompt": prompt, "before": plain, "after": edited,
                      "male_margin_before": float(male_margins(lm, [update.request.subject])[0]),
                      "male_margin_after": margin_after})
    return shown


def bias_side_effects(lm: LoadedModel, edit: WeightEdit) -> dict[str, dict[str, float]]:
    """Occupation bias (Pearson r with BLS, mean P(she)) and definitional accuracy without and with ``edit``."""
    from saescope.bias.benchmarks import definitional_accuracy, occupation_bias
    from saescope.bias.data import BiasData

    data = BiasData.load()

    def measure() -> dict[str, float]:
        occupations = occupation_bias(lm, data.occupations, data.templates)
        return {"occupation_pearson_r": occupations.pearson_r, "mean_p_she": occupations.mean_p_she,
                "definitional_accuracy": definitional_accuracy(lm, data.definitional)}

    before = measure()
    with edit.apply(lm):
        after = measure()
    return {"name": edit.request.subject, "before": before, "after": after}
