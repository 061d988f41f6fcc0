"""A small RUN of a random TopK SAE at layer 2, with sampled contexts, shared by the autointerp tests."""

import pytest
import torch

from saescope.features.extract import extract_features
from saescope.features.samples import SampleConfig, sample_contexts
from saescope.sae.core import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"
SAMPLING = SampleConfig(tokens=2048, bins=3, per_bin=3, batch_size=4)


@pytest.fixture(scope="module")
def sampling() -> SampleConfig:
    return SAMPLING


@pytest.fixture(scope="module")
def small_sae():
    torch.manual_seed(0)
    sae = SAE(SAEConfig(576, 48, "topk", k=4, hook_name=HOOK))
    with torch.no_grad():
        sae.b_enc.fill_(0.5)
    return sae.requires_grad_(False)


@pytest.fixture(scope="module")
def run(lm, small_sae, tmp_path_factory):
    loaded = extract_features(lm, small_sae, tmp_path_factory.mktemp("ai") / "run", tokens=2048, batch_size=4,
                              context=64, top_k=5, progress=False)
    sample_contexts(lm, small_sae, loaded, list(range(12)), SAMPLING, progress=False)
    return loaded
