"""Intervening from a graph: scaling a transcoder feature node in the embedded model is what subtracting its
decoder contribution by hand gives; a scale of 1 changes nothing; bad node ids are one-line errors."""

from __future__ import annotations

import pytest
import torch

from saescope.circuits.graph_intervene import MAX_NODES, feature_node, scale_graph_features
from saescope.errors import SaescopeError
from saescope.model.hooks import capture, intervene
from saescope.sae.transcoders import TranscoderSet, make_transcoder


@pytest.fixture(scope="module")
def transcoders(lm):
    torch.manual_seed(0)
    saes = {layer: make_transcoder(layer, lm.d_model, 32, "topk", 4, lm.name).requires_grad_(False)
            for layer in range(lm.n_layers)}
    return TranscoderSet(saes, lm.name)


def test_ablating_a_node_is_removing_its_decoder_contribution(lm, transcoders):
    tokens = lm.encode("The nurse said that")
    ids = torch.tensor([tokens])
    layer, position = 3, 1
    with torch.inference_mode(), capture(lm.model, [f"blocks.{layer}.hook_mlp_in"]) as got:
        lm.model(ids)
    codes = transcoders[layer].encode(got[f"blocks.{layer}.hook_mlp_in"][0, position].float())
    feature = int(codes.argmax())
    assert codes[feature] > 0
    result = scale_graph_features(lm, transcoders, tokens, [f"{layer}_{feature}_{position}"], scale=0.0,
                                  watch=lm.encode(" she") + lm.encode(" he"))

    def remove(acts: torch.Tensor) -> torch.Tensor:
        out = acts.clone()
        out[0, position] -= codes[feature] * transcoders[layer].W_dec[feature]
        return out

    with torch.inference_mode(), intervene(lm.model, {f"blocks.{layer}.hook_mlp_out": remove}):
        by_hand = lm.model(ids).logits[0, -1].float().softmax(-1)
    for entry in result["watch"]:
        assert entry["after"] == pytest.approx(float(by_hand[entry["id"]]), abs=1e-6)
    assert result["after"][0]["prob"] == pytest.approx(float(by_hand.max()), abs=1e-6)
    assert result["before"] != result["after"]
    same = scale_graph_features(lm, transcoders, tokens, [f"{layer}_{feature}_{position}"], scale=1.0)
    assert same["before"] == same["after"]


def test_bad_nodes_are_one_line_errors(lm, transcoders):
    tokens = lm.encode("The nurse said that")
    for nodes, message in (([], "pin at least one feature"), (["E_5_0"], "is not a feature node"),
                           (["3_-1_2"], "is not a feature node"), (["30_1_1"], "outside the graph"),
                           (["3_32_1"], "outside the graph"), (["3_1_4"], "outside the graph"),
                           ([f"1_{i % 32}_{i % 4}" for i in range(MAX_NODES + 1)], "at most")):
        with pytest.raises(SaescopeError, match=message):
            scale_graph_features(lm, transcoders, tokens, nodes)
    assert feature_node("29_31_3", 30, 4, 32) == (29, 31, 3)
