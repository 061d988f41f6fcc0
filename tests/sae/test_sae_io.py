"""SAE files: SAELens interop (real sae-lens outputs), our round-trip, dictionary_learning, bad files."""

import json

import pytest
import torch
from safetensors.torch import load_file

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import load_sae, save_sae


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu"])
def test_saelens_files_reproduce_saelens_outputs(shared_data, arch):
    folder = shared_data / "fixtures" / "saelens"
    expected = load_file(str(folder / "expected_outputs.safetensors"))
    sae = load_sae(folder / arch)
    assert sae.cfg.hook_name == "blocks.12.hook_resid_post" and sae.d_in == 576 and sae.d_sae == 256
    torch.testing.assert_close(sae.encode(expected["input"]), expected[f"{arch}.features"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode(expected[f"{arch}.features"]), expected[f"{arch}.reconstruction"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu", "jumprelu"])
def test_save_load_round_trip_in_saelens_layout(tmp_path, activation):
    torch.manual_seed(1)
    sae = SAE(SAEConfig(8, 32, activation, k=4 if "topk" in activation else None, hook_name="blocks.1.hook_resid_post"))
    if sae.threshold is not None:
        with torch.no_grad():
            sae.threshold.fill_(0.1)
    save_sae(sae, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(activation, activation)
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    weights = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert weights["W_enc"].shape == (8, 32) and weights["W_dec"].shape == (32, 8)
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg.activation == activation
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))


def test_dictionary_learning_files_load_with_their_encoding(tmp_path):
    torch.manual_seed(2)
    d_in, d_sae = 8, 24
    state = {"encoder.weight": torch.randn(d_sae, d_in), "encoder.bias": torch.randn(d_sae),
             "decoder.weight": torch.randn(d_in, d_sae), "bias": torch.randn(d_in)}
    torch.save(state, tmp_path / "ae.pt")
    sae = load_sae(tmp_path)
    x = torch.randn(4, d_in)
    reference = torch.relu((x - state["bias"]) @ state["encoder.weight"].T + state["encoder.bias"])
    torch.testing.assert_close(sae.encode(x), reference)
    torch.testing.assert_close(sae.decode(reference), reference @ state["decoder.weight"].T + state["bias"])
    topk_state = {**{k: v for k, v in state.items() if k != "bias"}, "b_dec": state["bias"], "k": torch.tensor(3),
                  "threshold": torch.tensor(-1.0)}
    torch.save(topk_state, tmp_path / "topk.pt")
    topk = load_sae(tmp_path / "topk.pt")
    assert topk.cfg.activation == "topk" and ((topk.encode(x) > 0).sum(-1) <= 3).all()


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"encoder.weight": Evil()}, tmp_path / "ae.pt")
    with pytest.raises(SaescopeError, match="weights-only"):
        load_sae(tmp_path / "ae.pt")


def test_corrupt_truncated_and_mismatched_files_give_one_clear_error(tmp_path):
    sae = SAE(SAEConfig(8, 16, "relu"))
    save_sae(sae, tmp_path / "good")
    data = (tmp_path / "good" / "sae_weights.safetensors").read_bytes()
    (tmp_path / "good" / "sae_weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SaescopeError, match="corrupt or truncated"):
        load_sae(tmp_path / "good")
    save_sae(sae, tmp_path / "wide")
    cfg = json.loads((tmp_path / "wide" / "cfg.json").read_text())
    cfg["d_sae"] = 17
    (tmp_path / "wide" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SaescopeError, match="shape"):
        load_sae(tmp_path / "wide")
    with pytest.raises(SaescopeError, match="does not exist"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaescopeError, match="is not an SAE"):
        load_sae(tmp_path / "empty")


def test_saelens_decoder_norm_rescaling_is_folded_exactly(tmp_path):
    torch.manual_seed(3)
    sae = SAE(SAEConfig(8, 32, "topk", k=4))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(32, 1) + 0.5)
    save_sae(sae, tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["rescale_acts_by_decoder_norm"] = True
    del cfg["metadata"]["saescope"]
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    x = torch.randn(6, 8)
    norms = sae.W_dec.norm(dim=-1)
    pre = sae.encode_pre(x) * norms  # SAELens: rescale pre-activations, then top-k
    values, indices = pre.topk(4, dim=-1)
    feats = torch.zeros_like(pre).scatter_(-1, indices, values.relu())
    expected_recon = (feats / norms) @ sae.W_dec + sae.b_dec
    loaded = load_sae(tmp_path / "s")
    torch.testing.assert_close(loaded.encode(x), feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded(x), expected_recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.W_dec.norm(dim=-1), torch.ones(32))
