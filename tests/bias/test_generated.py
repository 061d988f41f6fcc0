"""Bias in what the model writes: pronouns of sampled continuations, the same seeds with and without
an intervention, carried through the evaluation's JSON."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from saescope.bias.data import BiasData
from saescope.bias.evaluation import BiasEvaluation, evaluate
from saescope.bias.generated import generated_bias, pronoun_gender
from saescope.errors import SaescopeError
from saescope.steering import VectorSteering


def test_the_first_gendered_pronoun_decides():
    assert pronoun_gender(" she said his car") == "female"
    assert pronoun_gender(" The man took HIS coat") == "male"
    assert pronoun_gender(" they left; sheer luck, hero") is None  # whole words only
    assert pronoun_gender("Himself, then her") == "male"


@pytest.mark.embedded
def test_sampled_pronouns_are_scored(lm):
    occupations = BiasData.load().occupations[:6]
    plain = generated_bias(lm, occupations, samples=2, max_new_tokens=12)
    assert plain.samples == 6 * 2 * 2 and 0 < plain.with_pronoun <= plain.samples
    assert all(0 <= p <= 1 for p in plain.p_female.values()) and set(plain.p_female) <= {o.name for o in occupations}
    assert math.isnan(plain.pearson_r) or -1 <= plain.pearson_r <= 1
    with pytest.raises(SaescopeError, match="samples must be at least 1"):
        generated_bias(lm, occupations, samples=0)


def _same(a, b) -> bool:
    """Equal scores (a correlation over too few occupations is NaN on both sides)."""
    return (a.p_female, a.with_pronoun, a.samples) == (b.p_female, b.with_pronoun, b.samples) and (
        a.pearson_r == b.pearson_r or (math.isnan(a.pearson_r) and math.isnan(b.pearson_r)))


@pytest.mark.embedded
def test_the_evaluation_carries_the_generated_figures(lm):
    from bias.test_bias import small_data

    data = replace(small_data(4), occupations=small_data(4).occupations[:4])
    null = VectorSteering("blocks.12.hook_resid_post", torch.zeros(lm.d_model))
    result = evaluate(lm, null, data, ce_tokens=128, generate=1)
    assert _same(result.generated, result.generated_intervened)  # the same seeds: a null intervention writes the same
    assert result.changes["generated_abs_r"] == pytest.approx(abs(result.generated.pearson_r), nan_ok=True)
    back = BiasEvaluation.from_dict(json.loads(json.dumps(result.to_dict(), default=float)))
    assert _same(back.generated, result.generated) and "generated_abs_r" in back.targets_met
    assert any(name.startswith("generated pronouns") for name, _, _ in result.summary_rows())
