"""Full-rank weight changes (what fine-tuning leaves) and the CDA baseline's parts, on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import tiny_model
from saescope.bias.debias.cda import counterfactual, fine_tune
from saescope.editing.weight_delta import WeightDelta, load_delta
from saescope.editing.weight_edit import load_applicable
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel

MODULE = "transformer.h.1.mlp.c_proj"


@pytest.fixture()
def lm() -> LoadedModel:
    return LoadedModel(tiny_model("gpt2"), tokenizer=None, name="gpt2-tiny")


def test_counterfactuals_swap_nouns_pronouns_and_names_keeping_case():
    assert counterfactual("The King thanked his wife.") == "The Queen thanked her husband."
    assert counterfactual("She is an actress and a mother") == "He is an actor and a father"
    assert counterfactual("Mary met the men") != "Mary met the women"  # names swap too
    assert "women" in counterfactual("Mary met the men")


def test_a_weight_change_applies_restores_exactly_saves_and_loads(lm, tmp_path):
    weight = dict(lm.model.named_modules())[MODULE].weight
    original = weight.detach().clone()
    delta = WeightDelta({MODULE: torch.full_like(original, 0.5)}, {"note": "test"})
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = lm.model(input_ids=ids).logits
        with delta.apply(lm):
            assert torch.equal(weight, original + 0.5)
            changed = lm.model(input_ids=ids).logits
    assert torch.equal(weight, original) and not torch.allclose(plain, changed)
    again = load_applicable(delta.save(tmp_path / "edit"))
    assert isinstance(again, WeightDelta) and torch.equal(again.deltas[MODULE], delta.deltas[MODULE])
    assert again.info == {"note": "test"}
    with pytest.raises(SaescopeError, match="which gpt2-tiny does not have"):
        with WeightDelta({"model.nowhere": torch.zeros(2)}).apply(lm):
            pass
    (tmp_path / "edit" / "delta.safetensors").write_bytes(b"broken")
    with pytest.raises(SaescopeError, match="not a readable saescope weight change"):
        load_delta(tmp_path / "edit")


def test_fine_tuning_snapshots_changes_and_leaves_the_model_as_it_was(lm):
    weight = dict(lm.model.named_modules())[MODULE].weight
    original = weight.detach().clone()
    windows = torch.randint(0, 128, (12, 16), generator=torch.Generator().manual_seed(1))
    snapshots = fine_tune(lm, [MODULE], windows, [2, 4], lr=1e-2, batch=4)
    assert sorted(snapshots) == [2, 4] and snapshots[4][MODULE].shape == original.shape
    assert snapshots[2][MODULE].abs().sum() > 0 and not torch.equal(snapshots[2][MODULE], snapshots[4][MODULE])
    assert torch.equal(weight, original)
    assert all(p.requires_grad for p in lm.model.parameters())  # the flags are put back as they were


def test_a_debias_folder_with_a_weight_change_loads(tmp_path):
    import shutil

    from saescope.bias.debias import DebiasRun

    folder = tmp_path / "debias"
    shutil.copytree(Path(__file__).parents[1] / "compat" / "release-0.1" / "debias", folder)
    (folder / "intervention.json").unlink()
    WeightDelta({MODULE: torch.ones(2, 2)}, {"method": "cda"}).save(folder / "edit")
    run = DebiasRun.load(folder)
    assert isinstance(run.intervention, WeightDelta) and run.intervention.info == {"method": "cda"}


@pytest.mark.slow  # ~20 s: the CDA method end to end on the embedded model, one step
def test_cda_is_a_debias_method_with_a_saved_weight_change(tmp_path):
    from bias.test_debias_run import _selection
    from saescope.bias.debias import plan_debias
    from saescope.model.loading import load_model
    from saescope.sae.formats import load_sae

    plan = plan_debias(load_model(dtype="float32"), load_sae("default"), "cda", layers=[12], strengths=[1],
                       selection=_selection())
    assert plan.candidate == "1 steps, layers 12" and isinstance(plan.intervention, WeightDelta)
    assert set(plan.intervention.deltas) == {"model.layers.12.mlp.down_proj"}
