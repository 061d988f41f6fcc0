"""Model loading: the embedded model, any local Hugging Face folder, dtypes, and errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from saescope.errors import SaescopeError
from saescope.model.hooks import forward_until
from saescope.model.loading import load_model
from saescope.precision import parse_dtype


def test_embedded_model_is_smollm2(lm):
    assert (lm.n_layers, lm.d_model, lm.model.config.vocab_size) == (30, 576, 49152)
    ids = lm.tokenize(["The capital of France is"])["input_ids"]
    next_token = lm.tokenizer.decode(lm.model(ids).logits[0, -1].argmax())
    assert next_token.strip() == "Paris"


def test_local_folder_of_another_architecture_loads_in_bfloat16(lm, tmp_path):
    config = AutoConfig.for_model("gpt2", n_layer=3, n_embd=64, n_head=4, vocab_size=len(lm.tokenizer))
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "gpt2")
    lm.tokenizer.save_pretrained(tmp_path / "gpt2")
    small = load_model(tmp_path / "gpt2", dtype="bf16")
    assert small.dtype == torch.bfloat16 and small.n_layers == 3 and small.d_model == 64
    acts = forward_until(small.model, ["blocks.2.hook_resid_post"], small.tokenize(["hi there"])["input_ids"])
    assert acts["blocks.2.hook_resid_post"].shape[-1] == 64


def test_bad_model_inputs():
    with pytest.raises(SaescopeError, match="does not exist"):
        load_model("/no/such/folder")
    with pytest.raises(SaescopeError, match="unknown dtype"):
        parse_dtype("float8")
