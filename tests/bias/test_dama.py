"""dama (the stereotype edited where it is written), the prompting baseline and the gender-vector
erasure: known answers of their parts, their invariants on the embedded model, and their bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import saescope
from saescope.bias.data import SelectionPrompts
from saescope.bias.debias import DebiasConfig, plan_debias
from saescope.bias.debias.dama import RANK, fit_selection, low_rank_fit, readout_subspaces
from saescope.bias.debias.prompt import INSTRUCTIONS
from saescope.bias.debias.vector_erase import saved_gender_vector
from saescope.bias.stereotype_trace import stereotype_trace
from saescope.editing.weight_delta import WeightDelta
from saescope.errors import SaescopeError
from saescope.model.generation import format_prompts
from saescope.model.likelihood import encode_texts, next_token_logprobs
from saescope.sae.formats import load_sae
from saescope.steering import SubspaceErasure, load_intervention
from saescope.steering.prompt import PromptPrefix


def test_low_rank_fit_meets_its_targets_and_spares_the_preserved_keys():
    generator = torch.Generator().manual_seed(0)
    keys, preserve = torch.randn(6, 40, generator=generator), torch.randn(5, 40, generator=generator)
    targets = torch.randn(6, 3, generator=generator)
    a = low_rank_fit(keys, targets, preserve, torch.eye(40), ridge=1e-6)
    assert a.shape == (40, 3)
    assert torch.allclose(keys @ a, targets, atol=1e-3) and (preserve @ a).abs().max() < 1e-3
    # a large ridge keeps the change small everywhere
    assert low_rank_fit(keys, targets, preserve, torch.eye(40), ridge=1e3).norm() < 0.01 * a.norm()


def test_readout_subspaces_are_orthonormal_and_lead_with_the_mean():
    grads = {3: torch.randn(50, 12, generator=torch.Generator().manual_seed(1)) + torch.linspace(-1, 1, 12)}
    basis = readout_subspaces(grads, 4)[3]
    assert basis.shape == (12, 4) and torch.allclose(basis.T @ basis, torch.eye(4), atol=1e-5)
    assert float(basis[:, 0] @ grads[3].sum(0)) > 0


def test_the_fit_occupations_are_training_only_and_disjoint():
    selection = SelectionPrompts.load()
    fit = fit_selection(selection)
    scored = set(selection.female_occupations + selection.male_occupations)
    assert len(fit.female_occupations) == len(fit.male_occupations) == 16
    assert not scored & set(fit.female_occupations + fit.male_occupations)
    from saescope.bias.data import BiasData

    evaluated = {o.name for o in BiasData.load().occupations}
    assert not evaluated & set(fit.female_occupations + fit.male_occupations)
    definitional = {p.prompt.split(" ", 1)[0] for p in BiasData.load().definitional}
    assert not definitional & {s.split()[-1] for s in selection.preserve_female + selection.preserve_male}


def _small(selection: SelectionPrompts) -> SelectionPrompts:
    return dataclasses.replace(selection, female_occupations=selection.female_occupations[:4],
                               male_occupations=selection.male_occupations[:4], templates=selection.templates[:2],
                               fit_female_occupations=selection.fit_female_occupations[:6],
                               fit_male_occupations=selection.fit_male_occupations[:6],
                               definitional=selection.definitional[::4])


def test_the_last_layer_writes_nothing_to_the_last_position(lm):
    """The trace's known answer: the last MLP's output at the occupation reaches no later position."""
    trace = stereotype_trace(lm, ["midwife", "nanny"], ["pilot", "welder"], ["The {occupation} explained that"])
    assert trace.effects.shape == (lm.n_layers,) and trace.gap > 0
    assert trace.effects[-1] == 0
    assert trace.top_layers(2, first=1)[0] >= 1 and len(trace.top_layers(3)) == 3


@pytest.fixture(scope="module")
def small_table(lm):
    from saescope.bias.gender_features import rank_gender_features

    selection = _small(SelectionPrompts.load())
    return selection, rank_gender_features(lm, load_sae("default"), selection=selection)


def test_dama_edits_only_the_gender_subspace_and_keeps_preserved_subjects(lm, small_table):
    selection, table = small_table
    plan = plan_debias(lm, load_sae("default"), "dama", layers=[6, 24], selection=selection, table=table)
    delta = plan.intervention
    assert isinstance(delta, WeightDelta) and sorted(delta.info["layers"]) == [6, 24]
    assert sorted(delta.deltas) == ["model.layers.24.mlp.down_proj", "model.layers.6.mlp.down_proj"]
    for layer, change in zip((24, 6), (delta.deltas["model.layers.24.mlp.down_proj"],
                                       delta.deltas["model.layers.6.mlp.down_proj"])):
        assert torch.linalg.matrix_rank(change) <= RANK
        fit = delta.info["fit"][str(layer)]
        assert fit["stereotype_spread_after"] < 0.5 * fit["stereotype_spread_before"]
        assert fit["preserved_change"] < 0.2
    weight = dict(lm.model.named_modules())["model.layers.6.mlp.down_proj"].weight
    before = weight.detach().clone()
    with delta.apply(lm):
        assert not torch.equal(weight, before)
    assert torch.equal(weight, before)  # undone exactly


def test_dama_bad_input(lm, small_table):
    selection, table = small_table
    with pytest.raises(SaescopeError, match="layer 99 is out of range"):
        plan_debias(lm, load_sae("default"), "dama", layers=[99], selection=selection, table=table)
    with pytest.raises(SaescopeError, match="preserve is empty"):
        DebiasConfig(method="dama", preserve=" , ")
    with pytest.raises(SaescopeError, match="dama strengths are layer counts"):
        plan_debias(lm, load_sae("default"), "dama", strengths=[40], selection=selection, table=table)


def test_the_instruction_is_read_before_every_prompt_and_taken_away_after(lm, tmp_path):
    prompt, instruction = "The midwife explained that", INSTRUCTIONS[0]
    she, lead, plain = lm.encode(" she"), lm.encode(instruction + "\n"), lm.encode(prompt)
    with PromptPrefix(instruction).apply(lm):
        inside = next_token_logprobs(lm, [prompt], she)
        assert lm.instruction == instruction + "\n" and encode_texts(lm, [prompt]) == [lead + plain]  # encoded apart
        assert lm.encode(" she") == she  # token lookups are not prefixed
        assert format_prompts(lm, ["Hi"]) == [instruction + "\nHi"]  # generation reads it too
        assert instruction in format_prompts(lm, ["Hi"], chat=True)[0]
    assert lm.instruction is None
    rows = torch.tensor([lead + plain])
    with torch.inference_mode():
        by_hand = lm.model(rows).logits[0, -1].float().log_softmax(-1)[she]
    assert torch.allclose(inside[0], by_hand, atol=1e-4)
    assert not torch.allclose(inside, next_token_logprobs(lm, [prompt], she))
    with pytest.raises(RuntimeError), PromptPrefix("Hello.").apply(lm):
        raise RuntimeError("boom")
    assert lm.instruction is None
    PromptPrefix(instruction).save(tmp_path / "prompt.json")
    assert load_intervention(tmp_path / "prompt.json").text == instruction + "\n"
    with pytest.raises(SaescopeError, match="instruction is empty"):
        PromptPrefix("  ")


def test_the_gender_vector_of_a_study_folder_is_erased_gated(lm, small_table, tmp_path):
    from safetensors.torch import save_file

    selection, table = small_table
    vector = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(2))
    save_file({"direction.mean_delta": vector}, str(tmp_path / "vectors.safetensors"))
    plan = plan_debias(lm, load_sae("default"), "gender-vector", vector=str(tmp_path), layers=[12],
                       selection=selection, table=table)
    erasure = plan.intervention
    assert isinstance(erasure, SubspaceErasure) and erasure.gate is not None
    assert torch.allclose(erasure.basis[0], vector / vector.norm(), atol=1e-6)
    with pytest.raises(SaescopeError, match="holds no gender vector"):
        saved_gender_vector(tmp_path / "missing")


def test_dama_cli_refuses_a_layer_out_of_range(tmp_path):
    result = saescope("bias", "debias", "--method", "dama", "--layers", "99", "--out", str(tmp_path / "d"))
    assert result.returncode == 2 and "layer 99 is out of range" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()
