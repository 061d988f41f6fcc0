"""``debias --method graph``: transcoder features steered where they are read and written, the stereotype
features found by direct effects on the selection prompts, and the planned candidate saved and reloaded."""

from __future__ import annotations

import pytest
import torch

from bias.test_debias_run import _selection
from saescope.model.hooks import applied, capture
from saescope.sae.transcoders import TranscoderSet, load_transcoders, make_transcoder
from saescope.steering import FeatureEdit, FeatureSteering
from saescope.steering.base import intervention_from_dict


@pytest.fixture(scope="module")
def transcoders(lm, tmp_path_factory):
    """A random transcoder at every layer of the embedded model (TopK 4 of 48), saved and loaded as a set."""
    torch.manual_seed(0)
    saes = {layer: make_transcoder(layer, lm.d_model, 48, "topk", 4, lm.name) for layer in range(lm.n_layers)}
    folder = tmp_path_factory.mktemp("tc") / "set"
    TranscoderSet(saes, lm.name).save(folder)
    return load_transcoders(folder)


def test_a_transcoder_feature_is_read_at_the_mlp_input_and_changed_at_its_output(lm, transcoders):
    sae = transcoders[5]
    ids = torch.tensor([lm.encode("The nurse said that she was tired")])
    hooks = ["blocks.5.hook_mlp_in", "blocks.5.hook_mlp_out"]
    with torch.no_grad(), capture(lm.model, hooks) as plain:
        lm.model(input_ids=ids)
    feature = int(sae.encode(plain[hooks[0]].float())[0, 1:].sum(0).argmax())  # the one firing most off the sink
    steering = FeatureSteering(sae, [FeatureEdit(feature, "ablate", 0.0)])
    assert steering.hook == "blocks.5.hook_mlp_in"
    with torch.no_grad(), applied(steering, lm), capture(lm.model, hooks[1:]) as steered:
        lm.model(input_ids=ids)
    codes = sae.encode(plain[hooks[0]].float())[..., feature]
    assert (codes > 0).any()  # the feature fires somewhere, so the check below means something
    expected = plain[hooks[1]].float() - codes[..., None] * sae.W_dec[feature]
    assert torch.allclose(steered[hooks[1]].float(), expected, atol=1e-4)
    again = intervention_from_dict(steering.to_dict(), "test")  # saved by reference to the layer's file
    assert again.to_dict() == steering.to_dict()


def test_the_graph_method_finds_stereotype_features_and_its_plan_reloads(lm, transcoders, tmp_path):
    from saescope.bias.debias import DebiasConfig, plan_debias
    from saescope.bias.debias.graph import stereotype_features
    from saescope.errors import SaescopeError
    from saescope.sae.formats import load_sae

    selection = _selection()
    folder = transcoders[0].cfg.metadata["source"].rsplit("/", 1)[0]
    plan = plan_debias(lm, load_sae("default"), DebiasConfig(method="graph", transcoders=folder, strengths=[2, 4]),
                       selection=selection)
    assert plan.candidates.shape[0] == 2 and plan.candidates.chosen.sum() == 1
    parts = plan.intervention.parts
    assert all(p.hook.endswith("hook_mlp_in") and all(e.op == "ablate" for e in p.edits) for p in parts)
    assert intervention_from_dict(plan.intervention.to_dict(), "test").to_dict() == plan.intervention.to_dict()

    class Context:  # the fields stereotype_features reads
        pass

    ctx = Context()
    ctx.lm, ctx.selection = lm, selection
    found = stereotype_features(ctx, transcoders)
    assert found and all(score > 0 for *_, score in found)
    assert [score for *_, score in found] == sorted((score for *_, score in found), reverse=True)
    chosen = {(p.hook, e.feature) for p in parts for e in p.edits}
    assert chosen <= {(f"blocks.{layer}.hook_mlp_in", feature) for layer, feature, _ in found[:4]}
    with pytest.raises(SaescopeError, match="no default transcoder set"):
        from saescope.sae import transcoders as module

        original = module.saescope_home
        module.saescope_home = lambda: tmp_path
        try:
            plan_debias(lm, load_sae("default"), DebiasConfig(method="graph"), selection=selection)
        finally:
            module.saescope_home = original
