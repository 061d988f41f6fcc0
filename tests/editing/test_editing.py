"""Editing on the embedded model: causal tracing's known end points, a ROME edit that flips one name's
gender and leaves another's, exact restoration (also after an error), saved edits, key statistics."""

from __future__ import annotations

import pytest
import torch

from saescope.editing.config import RomeConfig
from saescope.editing.evaluation import edit_scores
from saescope.editing.request import EditRequest, locate_subject
from saescope.editing.rome import rome_edit
from saescope.editing.statistics import key_second_moment
from saescope.editing.tracing import causal_trace
from saescope.editing.weight_edit import load_edit
from saescope.errors import SaescopeError
from saescope.model.hooks import capture
from saescope.model.likelihood import next_token_logprobs

LAYER = 9  # the peak of the MLP trace of "Name: Ben. Gender:" (edit trace)


def _female_minus_male(lm, names):
    ids = [lm.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" Female", " Male")]
    lp = next_token_logprobs(lm, [f"Name: {n}. Gender:" for n in names], ids)
    return (lp[:, 0] - lp[:, 1]).tolist()


@pytest.fixture(scope="module", autouse=True)
def home(lm, tmp_path_factory):
    """Key statistics go to a fresh cache, not the user's (the model is loaded before)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAESCOPE_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def edit(lm, home):
    request = EditRequest("Name: {}. Gender:", "Ben", " Female")
    return rome_edit(lm, request, RomeConfig(layer=LAYER, stats_tokens=2048, prefixes=4, steps=15))


def test_subject_tokens_are_found(lm):
    ids, positions = locate_subject(lm.tokenizer, "Name: Benjamin. Gender:", "Benjamin", prefix="Hello. ")
    assert lm.tokenizer.decode([ids[p] for p in positions]).strip() == "Benjamin"
    with pytest.raises(SaescopeError, match="does not occur"):
        locate_subject(lm.tokenizer, "Name: Ben.", "Tom")
    with pytest.raises(SaescopeError, match="exactly once"):
        EditRequest("Name: Ben.", "Ben", " Female")


def test_rome_flips_the_name_and_leaves_others(lm, edit):
    before = _female_minus_male(lm, ["Ben", "Tom", "Mary"])
    weight = dict(lm.model.named_modules())[edit.module].weight
    original = weight.detach().clone()
    with edit.apply(lm):
        after = _female_minus_male(lm, ["Ben", "Tom", "Mary"])
        assert not torch.equal(weight, original)
    assert before[0] < 0 < after[0]  # Ben: male before, female after
    assert after[1] < 0 and after[2] > 0  # Tom stays male, Mary female
    assert torch.equal(weight, original)  # restored bit for bit
    assert edit.module == f"model.layers.{LAYER}.mlp.down_proj" and edit.delta.shape == (lm.d_model,)
    assert edit.info["target_nll"][-1] < edit.info["target_nll"][0]


def test_an_error_inside_the_block_still_restores_the_weight(lm, edit):
    weight = dict(lm.model.named_modules())[edit.module].weight
    original = weight.detach().clone()
    with pytest.raises(RuntimeError), edit.apply(lm):
        raise RuntimeError("boom")
    assert torch.equal(weight, original)


def test_scores_and_round_trip(lm, edit, tmp_path):
    scores = edit_scores(lm, edit, ["Name: {}. Sex:"], ["Tom", "Mary"], ce_tokens=512)
    assert scores["efficacy"] == 1.0 and scores["specificity"] == 1.0
    assert scores["p_target_after"] > scores["p_target_before"] and abs(scores["ce_increase"]) < 0.02
    edit.save(tmp_path / "e")
    again = load_edit(tmp_path / "e")
    assert torch.equal(again.u, edit.u) and again.request == edit.request and again.layer == LAYER
    with again.apply(lm):
        assert _female_minus_male(lm, ["Ben"])[0] > 0
    (tmp_path / "e" / "edit.safetensors").write_bytes(b"garbage")
    with pytest.raises(SaescopeError, match="not a readable saescope edit"):
        load_edit(tmp_path / "e")


def test_the_original_rome_update_scales_by_another_key(lm, edit):
    quick = dict(layer=LAYER, stats_tokens=2048, prefixes=4, steps=2)
    r_rome = rome_edit(lm, edit.request, RomeConfig(**quick))
    original = rome_edit(lm, edit.request, RomeConfig(**quick, method="rome"))
    assert torch.allclose(original.v, r_rome.v) and torch.allclose(original.delta, r_rome.delta)
    cosine = torch.nn.functional.cosine_similarity(original.u, r_rome.u, dim=0)
    assert cosine > 0.999 and abs(float(original.u.norm() / r_rome.u.norm()) - 1) > 1e-3  # same direction, other scale


@pytest.mark.slow  # ~30 s of noised forward passes
def test_causal_trace_known_end_points(lm):
    trace = causal_trace(lm, "Name: Ben. Gender:", "Ben", kinds=("resid",), samples=2)
    n = len(trace.tokens)
    assert trace.effects["resid"].shape == (lm.n_layers, n) and trace.p_corrupt < trace.p_clean
    # restoring the whole last-layer residual at the last token gives back the clean output exactly
    assert float(trace.effects["resid"][-1, -1]) == pytest.approx(trace.p_clean - trace.p_corrupt, abs=1e-4)
    # before the subject, nothing was corrupted: restoring there changes nothing
    assert float(trace.effects["resid"][:, 0].abs().max()) < 1e-4
    with pytest.raises(SaescopeError, match="single-token"):
        causal_trace(lm, "Name: Ben. Gender:", "Ben", answer=" Femaleness and more", kinds=("resid",), samples=1)


def test_key_statistics_are_the_mean_outer_product_and_cached(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("SAESCOPE_HOME", str(tmp_path))
    moment = key_second_moment(lm, 3, tokens=256, context=128)
    assert moment.shape == (1536, 1536) and torch.allclose(moment, moment.T, atol=1e-5)
    assert float(torch.linalg.eigvalsh(moment.double()).min()) > -1e-4
    assert list(tmp_path.rglob("keys-L3-*.safetensors"))
    assert torch.equal(key_second_moment(lm, 3, tokens=256, context=128), moment)
    with pytest.raises(SaescopeError, match="out of range"):
        key_second_moment(lm, 99)


def test_mlp_post_hook_is_the_down_projection_input(lm):
    ids = torch.tensor([lm.tokenizer.encode("The cat sat on the mat.")])
    with torch.no_grad(), capture(lm.model, ["blocks.4.hook_mlp_post", "blocks.4.hook_mlp_out"]) as acts:
        lm.model(ids)
    down = lm.model.model.layers[4].mlp.down_proj
    torch.testing.assert_close(down(acts["blocks.4.hook_mlp_post"]), acts["blocks.4.hook_mlp_out"])
