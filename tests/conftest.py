"""Shared fixtures: the embedded model (loaded once), ../shared/data, tiny random models of other families."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def lm():
    from saescope.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not beside the repository")
    return SHARED_DATA


def tiny_model(family: str) -> torch.nn.Module:
    """A 2-layer random model of a family, built from a config (no download)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(vocab_size=128)
    configs = {
        "gpt2": dict(n_layer=2, n_embd=32, n_head=2, n_positions=64),
        "gpt_neox": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64),
        "gemma2": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, head_dim=16),
        "qwen2": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=64),
        "mistral": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                        intermediate_size=64),
    }
    config = AutoConfig.for_model(family, **common, **configs[family])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()
