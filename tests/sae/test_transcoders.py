"""Transcoders: circuit-tracer's layout both ways, training from one pass (with resume), evaluation, bad input."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import saescope
from saescope.errors import SaescopeError
from saescope.sae.objectives import objective
from saescope.sae.transcoder_training import TranscoderConfig, check_layers, parse_layers, train_transcoders
from saescope.sae.transcoders import TranscoderSet, load_transcoders, make_transcoder


def _set(layers=(0, 1), d=16, f=24, activation="topk", skip=False) -> TranscoderSet:
    torch.manual_seed(0)
    saes = {layer: make_transcoder(layer, d, f, activation, 4, "m", skip) for layer in layers}
    for sae in saes.values():
        with torch.no_grad():
            sae.b_enc.normal_()
            sae.b_dec.normal_()
            if sae.W_skip is not None:
                sae.W_skip.normal_()
            if sae.threshold is not None:
                sae.threshold.uniform_(0, 0.5)
    return TranscoderSet(saes, "m", {"note": "test"})


@pytest.mark.parametrize("activation", ["topk", "jumprelu", "relu", "skip"])
def test_the_circuit_tracer_layout_round_trips(tmp_path, activation):
    skip = activation == "skip"
    activation = "topk" if skip else activation
    original = _set(activation=activation, skip=skip)
    original.save(tmp_path / "set")
    config = yaml.safe_load((tmp_path / "set" / "config.yaml").read_text())
    assert config["model_kind"] == "transcoder_set" and config["feature_input_hook"] == "mlp.hook_in"
    assert config["transcoders"] == ["layer_0.safetensors", "layer_1.safetensors"]
    tensors = load_file(str(tmp_path / "set" / "layer_1.safetensors"))
    assert tensors["W_enc"].shape == (24, 16) and tensors["W_dec"].shape == (24, 16)  # circuit-tracer's orientation
    assert ("k" in tensors) == (activation == "topk")
    assert ("activation_function.threshold" in tensors) == (activation == "jumprelu")
    assert ("W_skip" in tensors) == skip
    loaded = load_transcoders(tmp_path / "set")
    assert loaded.skip == skip
    x = torch.randn(5, 16)
    if skip:  # circuit-tracer's skip: output += input @ W_skip.T
        codes = original[1].encode(x)
        assert torch.allclose(loaded[1](x), codes @ tensors["W_dec"] + tensors["b_dec"] + x @ tensors["W_skip"].T,
                              atol=1e-5)
    for layer in (0, 1):
        assert torch.allclose(loaded[layer](x), original[layer](x), atol=1e-6)
        assert loaded[layer].cfg.hook_name == f"blocks.{layer}.hook_mlp_in"
        assert loaded[layer].cfg.metadata["output_hook"] == f"blocks.{layer}.hook_mlp_out"
        assert not loaded[layer].cfg.apply_b_dec_to_input
    from saescope.sae.formats import load_sae

    one = load_sae(tmp_path / "set" / "layer_1.safetensors")
    assert torch.allclose(one(x), original[1](x), atol=1e-6)
    with pytest.raises(SaescopeError, match="is a transcoder set: name one layer"):
        load_sae(tmp_path / "set")


def test_bad_sets_are_refused(tmp_path):
    with pytest.raises(SaescopeError, match="is not a transcoder set"):
        load_transcoders(tmp_path)
    (tmp_path / "config.yaml").write_text("model_kind: [unclosed")
    with pytest.raises(SaescopeError, match="not valid YAML"):
        load_transcoders(tmp_path)
    (tmp_path / "config.yaml").write_text("model_kind: transcoder_set\ntranscoders: [layer_0.safetensors]\n")
    (tmp_path / "layer_0.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SaescopeError, match="not a readable safetensors file"):
        load_transcoders(tmp_path)
    with pytest.raises(SaescopeError, match="layer 30 is out of range"):
        check_layers([0, 30], 30)
    assert parse_layers("all") is None and parse_layers("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(SaescopeError, match="--layers must be"):
        parse_layers("0,x")
    with pytest.raises(SaescopeError, match="different widths"):
        TranscoderSet({0: make_transcoder(0, 8, 16, k=4), 1: make_transcoder(1, 8, 32, k=4)})


def test_the_objective_reconstructs_a_target_not_the_input():
    torch.manual_seed(0)
    sae = make_transcoder(0, 8, 32, "topk", 4)
    x, y = torch.randn(64, 8), torch.randn(64, 8)
    dead = torch.zeros(32, dtype=torch.bool)
    as_transcoder = objective(sae, x, dead, 0.0, 0.0, target=y)
    recon = sae(x).detach()
    assert as_transcoder.fvu == pytest.approx(float((recon - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()), rel=1e-5)
    assert objective(sae, x, dead, 0.0, 0.0).fvu != pytest.approx(as_transcoder.fvu)


@pytest.mark.parametrize("activation", ["topk", "relu"])
def test_a_skip_transcoder_learns_the_linear_part_of_its_target(activation):
    """A target that is a linear map of the input plus one sparse part: with the skip connection the
    transcoder fits it far better than without, at the same width and sparsity."""
    torch.manual_seed(0)
    x = torch.randn(2048, 8)
    linear = torch.randn(8, 8) / 8 ** 0.5
    y = x @ linear + torch.relu(x[:, :1]) * torch.randn(1, 8)
    dead = torch.zeros(4, dtype=torch.bool)
    fvus = {}
    for skip in (False, True):
        torch.manual_seed(1)
        sae = make_transcoder(0, 8, 4, activation, 1, skip=skip)
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
        for _ in range(400):
            result = objective(sae, x, dead, 0.0, 0.0, target=y)
            optimizer.zero_grad()
            result.loss.backward()
            optimizer.step()
        fvus[skip] = result.fvu
    assert fvus[True] < 0.1 < fvus[False]
    with pytest.raises(SaescopeError, match="saved as a transcoder set"):
        from saescope.sae.formats import save_sae

        save_sae(make_transcoder(0, 8, 4, "topk", 1, skip=True), "unused")
    with pytest.raises(SaescopeError, match="some transcoders of the set have a skip connection"):
        TranscoderSet({0: make_transcoder(0, 8, 16, k=4, skip=True), 1: make_transcoder(1, 8, 16, k=4)})


def test_training_on_the_model_resumes_and_evaluates(lm, tmp_path):
    from saescope.sae.transcoder_eval import evaluate_transcoders

    config = TranscoderConfig(layers=[0, 1], features=64, k=8, tokens=3000, model_batch=4, checkpoint_every=2)
    trained = train_transcoders(config, tmp_path / "a", lm=lm, progress=False)
    assert trained.layers == [0, 1] and (tmp_path / "a" / "config.yaml").exists()
    assert not (tmp_path / "a" / "checkpoint").exists()
    with pytest.raises(SaescopeError, match="already holds a finished run"):
        train_transcoders(config, tmp_path / "a", lm=lm, progress=False)
    result = evaluate_transcoders(lm, load_transcoders(tmp_path / "a"), tokens=512, progress=False)
    assert set(result.fvu) == {0, 1} and all(0 < v < 1.5 for v in result.fvu.values())
    assert 4 < result.l0[0] <= 8  # TopK k = 8 (a negative pre-activation among the top 8 stays off)
    assert result.ce_clean < result.ce_replaced < result.ce_zero  # a poor stand-in, better than no MLPs
    # an interrupted run resumes from its checkpoint to the same place
    short = TranscoderConfig(layers=[0, 1], features=64, k=8, tokens=1000, model_batch=4, checkpoint_every=1)
    from saescope.sae import transcoder_training

    original_save = transcoder_training.TranscoderSet.save

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt

    transcoder_training.TranscoderSet.save = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            train_transcoders(short, tmp_path / "b", lm=lm, progress=False)
    finally:
        transcoder_training.TranscoderSet.save = original_save
    assert (tmp_path / "b" / "checkpoint" / "state.json").exists()
    resumed = train_transcoders(short, tmp_path / "b", resume=True, lm=lm, progress=False)
    assert resumed.record["trained_tokens"] >= 1000


def test_transcoder_cli_bad_input(tmp_path):
    (tmp_path / "file").write_text("x")
    result = saescope("transcoders", "train", "--layers", "0,99", "--tokens", "100", "--out", str(tmp_path / "t"))
    assert result.returncode == 2 and "layer 99 is out of range" in result.stderr
    result = saescope("transcoders", "train", "--layers", "0", "--tokens", "100", "--out", str(tmp_path / "file"))
    assert result.returncode == 2 and "is a file" in result.stderr
    result = saescope("transcoders", "eval", str(tmp_path))
    assert result.returncode == 2 and "is not a transcoder set" in result.stderr
    name = "SmolLM2-135M-Instruct"
    TranscoderSet({0: make_transcoder(0, 576, 24, "topk", 4, name)}, name).save(tmp_path / "set")
    result = saescope("sae", "eval", str(tmp_path / "set" / "layer_0.safetensors"), "--tokens", "64", "--json")
    assert result.returncode == 0, result.stderr  # one layer of a set: its MLP-output figures
    figures = __import__("json").loads(result.stdout)
    assert figures["kind"] == "transcoder" and figures["layer"] == 0 and figures["mlp_fvu"] > 0
    assert figures["ce_loss_clean"] < figures["ce_loss_mlp_replaced"]


def test_the_default_set_lives_in_the_cache(tmp_path, monkeypatch):
    """`transcoders train` without --out writes the model's default set in the cache; `--transcoders default`
    reads it there, and before it exists says in one line how to train it."""
    from saescope.sae import transcoders as module

    monkeypatch.setattr(module, "saescope_home", lambda: tmp_path / "home")
    missing = saescope("graph", "attribute", "--prompt", "The nurse said that", "--out", str(tmp_path / "g"))
    assert missing.returncode == 2 and "no default transcoder set for" in missing.stderr
    assert "saescope transcoders train" in missing.stderr and not (tmp_path / "g").exists()
    trained = saescope("transcoders", "train", "--layers", "0", "--features", "32", "--k", "4", "--tokens", "256")
    assert trained.returncode == 0, trained.stderr
    folder = next((tmp_path / "home" / "transcoders").glob("*/default"))
    assert folder.parent.name.endswith("SmolLM2-135M-Instruct") and (folder / "config.yaml").is_file()
    evaluated = saescope("transcoders", "eval", "default", "--tokens", "64", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert '"mlp_fvu_median"' in evaluated.stdout


def test_the_evaluation_counts_the_skip_path(lm):
    """A skip transcoder whose W_skip is the (ridge) least-squares map from MLP input to output explains more of the
    output than its twin without one: the FVU must see the skip path."""
    from saescope.activations.read import hooks_activations
    from saescope.corpus import load_corpus, token_windows
    from saescope.sae.transcoder_eval import evaluate_transcoders

    windows = torch.stack([w for w, _ in zip(token_windows(lm.tokenizer, load_corpus("embedded", "train"), 64, 0),
                                             range(32))])
    captured = hooks_activations(lm, ["blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out"], windows)
    (x, keep), (y, _) = captured["blocks.0.hook_mlp_in"], captured["blocks.0.hook_mlp_out"]
    x, y = x[keep].float(), y[keep].float()
    fvus = []
    for skip in (False, True):
        torch.manual_seed(0)
        sae = make_transcoder(0, 576, 32, "topk", 4, lm.name, skip)
        if skip:
            with torch.no_grad():
                gram = x.T @ x
                ridge = gram + 0.01 * gram.trace() / len(gram) * torch.eye(len(gram))
                sae.W_skip.copy_(torch.linalg.solve(ridge, x.T @ y))
        fvus.append(evaluate_transcoders(lm, TranscoderSet({0: sae}, lm.name), tokens=256, progress=False).fvu[0])
    assert fvus[1] < 0.8 * fvus[0]
