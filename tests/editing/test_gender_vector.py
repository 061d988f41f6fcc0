"""Batched ROME values equal one-at-a-time ones; FT-L stays in its L∞ box and restores the model; the
box vector is the classifier's maximiser; names are gendered as the model says; value edits flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saescope.bias.gender_vector.names import PROMPT, gendered_names, male_margins, split_names
from saescope.bias.gender_vector.vector import box_vector, delta_classifier
from saescope.editing.config import RomeConfig
from saescope.editing.fine_tune import ft_l_edit
from saescope.editing.request import EditRequest
from saescope.editing.rome import edit_module, rome_edits, subject_update
from saescope.editing.values import optimise_values
from saescope.errors import SaescopeError

LAYER = 9


@pytest.fixture(scope="module", autouse=True)
def home(lm, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAESCOPE_HOME", str(tmp_path_factory.mktemp("home")))
        yield


def test_batched_values_equal_single_ones(lm):
    """Adam is per coordinate, so each request's δ follows the path it follows alone."""
    config = RomeConfig(layer=LAYER, prefixes=0, steps=6)
    module = edit_module(lm, LAYER)
    requests = [EditRequest(PROMPT, "Ben", " Female"), EditRequest(PROMPT, "Mary", " Male"),
                EditRequest(PROMPT, "Christopher", " Female")]
    together, v_together, _ = optimise_values(lm, module, requests, [""], config)
    for i, request in enumerate(requests):
        alone, v_alone, _ = optimise_values(lm, module, [request], [""], config)
        torch.testing.assert_close(v_together[i], v_alone[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(together[i], alone[0], rtol=2e-3, atol=2e-3)


def test_a_value_edit_adds_exactly_its_delta_at_the_subject(lm):
    """W += (δ / (v·k*)) vᵀ moves the MLP output at the subject's key by δ."""
    from saescope.editing.values import request_rows, subject_keys

    config = RomeConfig(layer=LAYER, prefixes=0, stats_tokens=2048)
    request = EditRequest(PROMPT, "Ben", " Male")
    update = subject_update(lm, request, LAYER, config)
    delta = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    item = request_rows(lm, request, [""])
    key = subject_keys(lm, LAYER, item.rows[:1], item.subject_at[:1])[0]
    weight = dict(lm.model.named_modules())[update.module].weight
    before = weight.float() @ key
    with update.edit(delta).apply(lm):
        after = weight.float() @ key
    torch.testing.assert_close(after - before, delta, rtol=1e-3, atol=1e-3)


def test_ft_l_stays_in_its_box_and_raises_the_target(lm):
    request = EditRequest(PROMPT, "Ben", " Female")
    weight = dict(lm.model.named_modules())[edit_module(lm, LAYER)].weight
    original = weight.detach().clone()
    edit = ft_l_edit(lm, request, LAYER, epsilon=2e-3, steps=8, lr=2e-3, prefixes=0)
    assert torch.equal(weight, original)  # the model is left as it was
    change = edit.update()
    assert change.abs().max() <= 2e-3 + 1e-6 and change.abs().max() > 1e-3
    before = float(-male_margins(lm, ["Ben"])[0])
    with edit.apply(lm):
        after = float(-male_margins(lm, ["Ben"])[0])
    assert after > before + 0.5
    assert torch.equal(weight, original)
    with pytest.raises(SaescopeError, match="epsilon"):
        ft_l_edit(lm, request, LAYER, epsilon=float("nan"))


def test_box_vector_maximises_a_linear_classifier():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(1, 1, (40, 16)), rng.normal(-1, 1, (40, 16))])
    labels = np.array([1] * 40 + [0] * 40)
    classifier = delta_classifier(torch.tensor(x), labels)
    assert classifier.accuracy == 1.0 and classifier.test == 24 and classifier.projection.shape == (80, 2)
    box = box_vector(classifier.weight)
    random_points = torch.rand(2000, 16) * 2 - 1
    assert float(box @ classifier.weight) >= float((random_points @ classifier.weight).max())
    assert set(box.tolist()) <= {-1.0, 1.0}


@pytest.mark.slow  # ~25 s
def test_names_are_gendered_as_the_model_says(lm):
    table = split_names(gendered_names(lm, 12), seed=0)
    assert (table.groupby("gender").size() == 12).all()
    margins = male_margins(lm, list(table.name))
    assert ((margins > 0).numpy() == (table.gender == "male").to_numpy()).all()
    assert (table.split == "discovery").sum() == 12 and not set(table.name[table.split == "discovery"]) & set(
        table.name[table.split == "heldout"])


def test_rome_edits_flip_names_in_one_batch(lm):
    requests = [EditRequest(PROMPT, "James", " Female"), EditRequest(PROMPT, "Linda", " Male")]
    edits = rome_edits(lm, requests, RomeConfig(layer=LAYER, prefixes=0, stats_tokens=2048), batch_size=2)
    for edit, sign in zip(edits, (-1, 1)):
        with edit.apply(lm):
            assert float(male_margins(lm, [edit.request.subject])[0]) * sign > 0


def test_discovery_edits_resume_where_they_stopped(lm, tmp_path, monkeypatch):
    import pandas as pd

    from saescope.bias.gender_vector import study

    discovery = pd.DataFrame({"name": ["Ben", "Mary", "James", "Linda"], "gender": ["male", "female", "male", "female"]})
    config = RomeConfig(layer=LAYER, prefixes=0, steps=3, stats_tokens=2048)
    first, _ = study.discovery_deltas(lm, discovery.head(2), config, tmp_path, 2, progress=False)
    made = []
    real = study.rome_edits
    monkeypatch.setattr(study, "rome_edits", lambda lm, requests, *a, **k: made.extend(requests) or real(lm, requests, *a, **k))
    again, _ = study.discovery_deltas(lm, discovery, config, tmp_path, 2, progress=False)
    assert [r.subject for r in made] == ["James", "Linda"]  # the first two were read back
    assert again.shape == (4, lm.d_model) and torch.equal(again[:2], first)
