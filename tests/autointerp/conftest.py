"""A small RUN of a random TopK SAE at layer 2, with sampled contexts, shared by the autointerp tests."""

import pytest

from helpers import small_topk_sae
from saescope.features.extract import extract_features
from saescope.features.samples import SampleConfig, sample_contexts

HOOK = "blocks.2.hook_resid_post"
SAMPLING = SampleConfig(tokens=2048, bins=3, per_bin=3, batch_size=4)


@pytest.fixture(scope="module")
def sampling() -> SampleConfig:
    return SAMPLING


@pytest.fixture(scope="module")
def small_sae():
    return small_topk_sae(48, HOOK)


@pytest.fixture(scope="module")
def run(lm, small_sae, tmp_path_factory):
    loaded = extract_features(lm, small_sae, tmp_path_factory.mktemp("ai") / "run", tokens=2048, batch_size=4,
                              context=64, top_k=5, progress=False)
    sample_contexts(lm, small_sae, loaded, list(range(12)), SAMPLING, progress=False)
    return loaded
