"""SAE suites: one shared forward pass caches several hook points, each SAE trains on its cache, the suite
resumes, refuses other settings, loads in depth order, and the shipped suite is there."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from saescope.activations.cache import cache_activations
from saescope.activations.layout import cached_tokens
from saescope.activations.read import hook_activations
from saescope.errors import SaescopeError
from saescope.sae.formats import load_sae
from saescope.sae.suite import SHIPPED_LAYERS, SuiteConfig, load_suite, train_suite

HOOKS = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]


def test_cache_matches_the_model_and_resumes_consistently(lm, tmp_path):
    folder = cache_activations(lm, HOOKS, tokens=600, folder=tmp_path / "acts", context=64, model_batch=4,
                               shard_tokens=256, progress=False)
    first = {h: cached_tokens(folder / h) for h in HOOKS}
    assert all(600 * 0.9 <= n <= 640 for n in first.values())
    stale = folder / HOOKS[0] / "shard_09999.safetensors"
    stale.write_bytes(b"half-written")
    cache_activations(lm, HOOKS, tokens=1200, folder=folder, context=64, model_batch=4, shard_tokens=256, progress=False)
    assert not stale.exists()
    assert all(cached_tokens(folder / h) > 2 * first[h] - 40 for h in HOOKS)
    from saescope.corpus import load_corpus, token_windows

    window = next(token_windows(lm.tokenizer, load_corpus("embedded", "train"), 64, 0))
    acts, keep = hook_activations(lm, HOOKS[1], window[None])
    shard = sorted((folder / HOOKS[1]).glob("shard_*.safetensors"))[0]
    with safe_open(str(shard), "pt") as f:
        cached = f.get_tensor("acts")[: int(keep.sum())]
    assert torch.allclose(cached.float(), acts[keep].bfloat16().float(), atol=1e-2)
    with pytest.raises(SaescopeError, match="caches hook points"):
        cache_activations(lm, HOOKS[:1], tokens=100, folder=folder, progress=False)


def test_train_a_suite_resume_it_and_load_it(lm, tmp_path):
    config = SuiteConfig(layers=[3, 1], features=64, k=4, tokens=2500, epochs=2, eval_tokens=256)
    saes = train_suite(config, tmp_path / "suite", lm=lm, progress=False)
    assert list(saes) == HOOKS  # depth order
    index = json.loads((tmp_path / "suite" / "suite.json").read_text())
    assert index["hooks"] == HOOKS and set(index["evaluations"]) == set(HOOKS)
    assert 0 < index["evaluations"][HOOKS[0]]["fvu"] < 1.5
    with safe_open(str(tmp_path / "suite" / HOOKS[0] / "sae_weights.safetensors"), "pt") as f:
        assert f.get_tensor("W_dec").dtype == torch.bfloat16
    assert not (tmp_path / "suite" / "activations").exists()
    weights = (tmp_path / "suite" / HOOKS[1] / "sae_weights.safetensors").stat().st_mtime_ns
    again = train_suite(config, tmp_path / "suite", lm=lm, progress=False)  # finished: nothing is retrained
    assert (tmp_path / "suite" / HOOKS[1] / "sae_weights.safetensors").stat().st_mtime_ns == weights
    assert torch.equal(again[HOOKS[1]].W_dec, saes[HOOKS[1]].W_dec)
    with pytest.raises(SaescopeError, match="other settings"):
        train_suite(SuiteConfig(layers=[1, 3], features=32, k=4, tokens=2500), tmp_path / "suite", lm=lm, progress=False)
    assert set(load_suite(tmp_path / "suite")) == set(HOOKS)


def test_a_suite_interrupted_between_saes_finishes_from_its_cache(lm, tmp_path):
    config = SuiteConfig(layers=[1, 3], features=32, k=4, tokens=2500, epochs=1, eval_tokens=0, keep_activations=True)
    train_suite(config, tmp_path / "suite", lm=lm, progress=False)
    first = (tmp_path / "suite" / HOOKS[0] / "sae_weights.safetensors").stat().st_mtime_ns
    for name in ("cfg.json", "sae_weights.safetensors"):  # as if stopped while the second SAE trained
        (tmp_path / "suite" / HOOKS[1] / name).unlink()
    saes = train_suite(config, tmp_path / "suite", lm=lm, progress=False)
    assert list(saes) == HOOKS
    assert (tmp_path / "suite" / HOOKS[0] / "sae_weights.safetensors").stat().st_mtime_ns == first


def test_the_shipped_suite():
    saes = load_suite("default")
    assert [int(h.split(".")[1]) for h in saes] == list(SHIPPED_LAYERS)
    for hook, sae in saes.items():
        assert sae.cfg.hook_name == hook and sae.d_in == 576
    assert load_sae("default/blocks.12.hook_resid_post").d_sae == 4608
    with pytest.raises(SaescopeError, match="the shipped ones are"):
        load_sae("default/blocks.13.hook_resid_post")
    with pytest.raises(SaescopeError, match="not an SAE suite"):
        load_suite("/nonexistent-suite")


@pytest.mark.parametrize("kwargs, message", [
    (dict(layers=[]), "at least one layer"), (dict(layers=[2, 2]), "must not repeat"),
    (dict(save_dtype="int8"), "save_dtype"), (dict(k=None), "needs k"), (dict(tokens=0), "positive"),
])
def test_bad_suite_settings(kwargs, message):
    with pytest.raises(SaescopeError, match=message):
        SuiteConfig(**kwargs)
