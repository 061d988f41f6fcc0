"""The single hook layer: names -> modules on several model families, capture, patching, early stop."""

import pytest
import torch

from helpers import tiny_model
from saescope.errors import SaescopeError
from saescope.model.hooks import capture, forward_until, intervene, resolve_hook

EXPECTED_PATHS = {
    "gpt2": ("transformer.h.1", "transformer.h.1.attn", "transformer.h.1.mlp"),
    "gpt_neox": ("gpt_neox.layers.1", "gpt_neox.layers.1.attention", "gpt_neox.layers.1.mlp"),
    "gemma2": ("model.layers.1", "model.layers.1.post_attention_layernorm", "model.layers.1.post_feedforward_layernorm"),
    "qwen2": ("model.layers.1", "model.layers.1.self_attn", "model.layers.1.mlp"),
    "mistral": ("model.layers.1", "model.layers.1.self_attn", "model.layers.1.mlp"),
}


@pytest.mark.parametrize("family", sorted(EXPECTED_PATHS))
def test_hook_names_resolve_and_capture_on_every_family(family):
    model = tiny_model(family)
    block, attn, mlp = EXPECTED_PATHS[family]
    assert resolve_hook(model, "blocks.1.hook_resid_post").module_path == block
    assert resolve_hook(model, "blocks.1.hook_attn_out").module_path == attn
    assert resolve_hook(model, "blocks.1.hook_mlp_out").module_path == mlp
    ids = torch.randint(0, 128, (2, 7))
    names = ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_attn_out",
             "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    with capture(model, names) as acts:
        model(ids)
    assert all(acts[n].shape == (2, 7, 32) for n in names)
    torch.testing.assert_close(acts["blocks.1.hook_resid_pre"], acts["blocks.0.hook_resid_post"])
    if family not in ("gpt_neox",):  # NeoX uses a parallel residual: attn and mlp read the same input
        torch.testing.assert_close(acts["blocks.1.hook_resid_post"],
                                   acts["blocks.1.hook_resid_pre"] + acts["blocks.1.hook_attn_out"]
                                   + acts["blocks.1.hook_mlp_out"], rtol=1e-4, atol=1e-4)


def test_resid_post_of_last_layer_feeds_the_final_norm(lm):
    ids = lm.tokenize(["Hello there, general Kenobi."])["input_ids"]
    last = f"blocks.{lm.n_layers - 1}.hook_resid_post"
    with capture(lm.model, [last, "model.norm"]) as acts:
        lm.model(ids)
    torch.testing.assert_close(lm.model.model.norm(acts[last]), acts["model.norm"])


def test_forward_until_matches_full_pass_and_skips_later_layers(lm):
    ids = lm.tokenize(["The cat sat on the mat."])["input_ids"]
    with capture(lm.model, ["blocks.5.hook_resid_post"]) as full:
        lm.model(ids)
    later_calls = []
    handle = lm.model.model.layers[6].register_forward_hook(lambda *a: later_calls.append(1))
    try:
        early = forward_until(lm.model, ["blocks.5.hook_resid_post", "blocks.2.hook_mlp_out"], ids)
    finally:
        handle.remove()
    assert later_calls == []
    torch.testing.assert_close(early["blocks.5.hook_resid_post"], full["blocks.5.hook_resid_post"])
    assert early["blocks.2.hook_mlp_out"].shape == (1, ids.shape[1], lm.d_model)
    assert not lm.model.model.layers[5]._forward_hooks


def test_patching_changes_downstream_and_identity_patch_changes_nothing(lm):
    ids = lm.tokenize(["Paris is the capital of"])["input_ids"]
    clean = lm.model(ids).logits
    with intervene(lm.model, {"blocks.3.hook_resid_pre": lambda a: a.clone()}):
        same = lm.model(ids).logits
    torch.testing.assert_close(same, clean)
    with intervene(lm.model, {"blocks.3.hook_mlp_out": lambda a: torch.zeros_like(a)}):
        ablated = lm.model(ids).logits
    assert (ablated - clean).abs().max() > 1e-2


def test_hooks_are_removed_even_when_the_forward_raises(lm):
    ids = lm.tokenize(["x"])["input_ids"]

    def boom(_acts):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        with intervene(lm.model, {"blocks.1.hook_resid_post": boom, "blocks.2.hook_resid_pre": boom}):
            lm.model(ids)
    layers = lm.model.model.layers
    assert not layers[1]._forward_hooks and not layers[2]._forward_pre_hooks


def test_bad_hook_names_give_clear_errors(lm):
    with pytest.raises(SaescopeError, match="out of range.*30 layers"):
        resolve_hook(lm.model, "blocks.30.hook_resid_post")
    with pytest.raises(SaescopeError, match="unknown hook point"):
        resolve_hook(lm.model, "blocks.3.hook_resid_mid")
    assert resolve_hook(lm.model, "model.layers.4.mlp").layer == 4
