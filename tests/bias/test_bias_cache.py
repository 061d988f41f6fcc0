"""The plain model's bias scores are cached by fingerprint; a changed model or data misses the cache."""

from __future__ import annotations

import pytest
import torch

from saescope.bias.cache import cache_key, data_fingerprint, model_fingerprint
from saescope.bias.data import BiasData
from saescope.bias.evaluation import evaluate
from saescope.steering import VectorSteering


def _small() -> BiasData:
    full = BiasData.load()
    return BiasData(full.occupations[:5], full.winobias[:3] + full.winobias[-3:], full.crows[:3], full.agreement[:6],
                    full.definitional[::20], full.templates[:2])


def test_second_evaluation_reuses_the_plain_models_scores(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("SAESCOPE_HOME", str(tmp_path))
    data = _small()
    steer = VectorSteering("blocks.12.hook_resid_post", torch.ones(lm.d_model), 4.0)
    first = evaluate(lm, steer, data, ce_tokens=128)
    second = evaluate(lm, steer, data, ce_tokens=128)
    assert not first.cached_base and second.cached_base
    assert second.base == first.base and second.intervened == first.intervened
    assert second.to_dict()["cached_base"] is True and second.to_dict()["dtype"] == "float32"
    fresh = evaluate(lm, steer, data, ce_tokens=128, cache=False)
    assert not fresh.cached_base and fresh.base.occupations.p_she == first.base.occupations.p_she


def test_the_key_changes_with_the_data_and_the_model(lm):
    data = _small()
    other = BiasData(data.occupations[:4], data.winobias, data.crows, data.agreement, data.definitional, data.templates)
    assert data_fingerprint(data) != data_fingerprint(other)
    assert cache_key(lm, data, 64) != cache_key(lm, other, 64) and cache_key(lm, data, 64) != cache_key(lm, data, 32)
    before = model_fingerprint(lm)
    weight = lm.model.model.layers[3].mlp.down_proj.weight
    old = float(weight[300, 700])
    with torch.no_grad():
        weight[300, 700] += 0.5  # an edit in the middle of a weight
    try:
        assert model_fingerprint(lm) != before
    finally:
        with torch.no_grad():
            weight[300, 700] = old
    assert model_fingerprint(lm) == before


def test_the_plain_models_hidden_states_are_cached_for_ce_and_kl(lm, tmp_path, monkeypatch):
    from saescope.bias.evaluation import side_effects

    monkeypatch.setenv("SAESCOPE_HOME", str(tmp_path))
    steer = VectorSteering("blocks.20.hook_resid_post", torch.ones(lm.d_model), 2.0)
    plain = side_effects(lm, steer, tokens=256, context=64)  # no key: nothing cached
    assert not list(tmp_path.rglob("*.safetensors"))
    first = side_effects(lm, steer, tokens=256, context=64, model_key="k")
    files = list(tmp_path.rglob("*.hidden.safetensors"))
    assert len(files) == 1
    second = side_effects(lm, steer, tokens=256, context=64, model_key="k")  # the plain side from the file
    assert second == first
    assert first == pytest.approx(plain, rel=1e-5) and first[2] > 0
    files[0].write_bytes(b"not safetensors")  # a damaged entry is measured again, never trusted
    assert side_effects(lm, steer, tokens=256, context=64, model_key="k") == pytest.approx(first, rel=1e-6)
