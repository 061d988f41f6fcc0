"""Saved interventions: type tags are class names, files written by 0.1 still load, one meaning
per operation, ``scaled()`` on every kind, and applying never moves the caller's SAE."""

from __future__ import annotations

import json

import pytest
import torch

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig, sae_fingerprint
from saescope.sae.formats import load_sae, save_sae
from saescope.steering import (
    AlignmentSteering,
    FeatureEdit,
    FeatureGate,
    FeatureSteering,
    Interventions,
    SubspaceErasure,
    VectorSteering,
    load_intervention,
)

HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    torch.manual_seed(1)
    folder = save_sae(SAE(SAEConfig(576, 64, "topk", k=4, hook_name=HOOK)), tmp_path_factory.mktemp("s") / "sae")
    return load_sae(folder)


def test_type_tags_are_class_names_and_round_trip(sae, tmp_path):
    parts = [FeatureSteering(sae, [FeatureEdit(1, "set", 2.0)]), VectorSteering(HOOK, torch.ones(576), 2.0),
             SubspaceErasure(HOOK, torch.randn(2, 576), gate=FeatureGate(sae, [3])),
             AlignmentSteering(sae, torch.rand(64), "add", top_n=3, value=4.0)]
    combined = Interventions(parts)
    combined.save(tmp_path / "all.json")
    data = json.loads((tmp_path / "all.json").read_text())
    assert data["type"] == "Interventions"
    assert [p["type"] for p in data["parts"]] == ["FeatureSteering", "VectorSteering", "SubspaceErasure",
                                                  "AlignmentSteering"]
    assert data["parts"][2]["gate"]["type"] == "FeatureGate"
    again = load_intervention(tmp_path / "all.json")
    assert [type(p) for p in again.parts] == [type(p) for p in parts]
    assert again.parts[0].edits[0].op == "set" and again.parts[3].method == "add"


def test_files_written_by_version_0_1_still_load(sae, tmp_path):
    ref = {"sae": sae.cfg.metadata["source"], "sae_fingerprint": sae_fingerprint(sae), "hook": HOOK}
    old = {"type": "all", "parts": [
        {"type": "features", **ref, "positions": None, "scale": "none", "max_activations": {},
         "edits": [{"feature": 1, "op": "clamp", "value": 2.0}]},
        {"type": "vector", "name": "v", "hook": HOOK, "coeff": 1.5, "positions": None, "vector": [0.1] * 576},
        {"type": "project", "name": "p", "hook": HOOK, "strength": 1.0, "positions": None,
         "basis": [[1.0] + [0.0] * 575], "mean": [0.0] * 576, "gate": {**ref, "features": [3]}},
        {"type": "alignment", **ref, "method": "clamp", "keep_error": True, "top_n": 2, "value": 3.0,
         "positions": None, "scores": [0.5] * 64}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = load_intervention(tmp_path / "old.json")
    kinds = [type(p).__name__ for p in loaded.parts]
    assert kinds == ["FeatureSteering", "VectorSteering", "SubspaceErasure", "AlignmentSteering"]
    assert loaded.parts[0].edits[0].op == "set" and loaded.parts[3].method == "add"
    assert loaded.parts[2].gate.features == [3]


def test_unknown_tags_and_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"type": "Nonsense"}))
    with pytest.raises(SaescopeError, match="unknown intervention type 'Nonsense'.*FeatureSteering"):
        load_intervention(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"type": "VectorSteering", "hook": HOOK}))
    with pytest.raises(SaescopeError, match="not a valid intervention file"):
        load_intervention(tmp_path / "y.json")


def test_scaled_exists_on_every_kind_and_refuses_where_there_is_no_strength(sae):
    assert VectorSteering(HOOK, torch.ones(576), 2.0).scaled(3).coeff == 6.0
    assert SubspaceErasure(HOOK, torch.randn(1, 576), strength=0.5).scaled(2).strength == 1.0
    assert FeatureSteering(sae, [FeatureEdit(1, "add", 2.0), FeatureEdit(2, "set", 5.0)]).scaled(2).edits[1].value == 5.0
    assert AlignmentSteering(sae, torch.rand(64), "add", value=4.0).scaled(0.5).value == 2.0
    with pytest.raises(SaescopeError, match="no strength to scale"):
        AlignmentSteering(sae, torch.rand(64), "swap").scaled(2)
    both = Interventions([VectorSteering(HOOK, torch.ones(576), 1.0), VectorSteering(HOOK, torch.ones(576), 2.0)])
    assert [p.coeff for p in both.scaled(-1).parts] == [-1.0, -2.0]


def test_absurd_values_are_refused(sae):
    with pytest.raises(SaescopeError, match="at most"):
        FeatureEdit(1, "add", 1e308)
    with pytest.raises(SaescopeError, match="at most"):
        VectorSteering(HOOK, torch.ones(576), -1e9)


def test_applying_never_moves_the_callers_sae(lm, sae):
    class OtherDevice:  # a model whose device differs from the SAE's, without needing a GPU
        model, name, d_model = lm.model, lm.name, lm.d_model
        device = torch.device("meta")

        def check_sae(self, s, hook=None):
            return hook

    steer = FeatureSteering(sae, [FeatureEdit(1, "set", 1.0)])
    copy = steer.sae_on(OtherDevice())
    assert copy is not sae and copy.W_dec.device.type == "meta" and sae.W_dec.device.type == "cpu"
    assert steer.sae_on(lm) is sae
