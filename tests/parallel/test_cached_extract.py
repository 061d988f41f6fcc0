"""Feature extraction from an activation cache: the cache gives back the model's windows and activations, a RUN
from it matches the RUN from the model (to bfloat16 rounding), 2 ranks reading it write the 1-rank RUN, and
caches that do not fit are named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import islice

import numpy as np
import pandas as pd
import pytest
import torch

from saescope.activations.cache import cache_activations
from saescope.activations.read import hook_activations
from saescope.activations.windows import CachedWindows
from saescope.corpus import load_corpus, windows_with_sources
from saescope.errors import SaescopeError
from saescope.features.extract import extract_features
from saescope.model.loading import load_model
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import save_sae

pytestmark = pytest.mark.embedded  # runs the embedded model in subprocesses

HOOK = "blocks.3.hook_resid_post"
CONTEXT = 64


@pytest.fixture(scope="module")
def lm():
    return load_model(None, dtype="float32")


@pytest.fixture(scope="module")
def cache(lm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("acts") / "acts"
    # small shards (8 windows each) so that extraction batches of 3 windows straddle shard boundaries
    cache_activations(lm, [HOOK], tokens=40 * (CONTEXT - 1), folder=folder, context=CONTEXT, model_batch=4,
                      shard_tokens=8 * (CONTEXT - 1), progress=False)
    return folder / HOOK


@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sae") / "sae"
    return save_sae(SAE(SAEConfig(576, 256, "topk", k=8, hook_name=HOOK)), folder)


def test_the_cache_gives_back_the_model_windows_and_activations(lm, cache):
    cached = CachedWindows(cache, lm.name, HOOK, lm.d_model)
    assert cached.n_windows == 40 and len(cached.shards) >= 3 and cached.context == CONTEXT
    expected = list(islice(windows_with_sources(lm.tokenizer, load_corpus("embedded", "train"), CONTEXT), 40))
    batches = [cached.take(7) for _ in range(6)]  # 7 does not divide 8: reads cross shard boundaries
    assert [len(b.ids) for b in batches] == [7, 7, 7, 7, 7, 5] and cached.take(7) is None
    ids, sources = torch.cat([b.ids for b in batches]), torch.cat([b.sources for b in batches])
    assert torch.equal(ids, torch.stack([w for w, _ in expected]))
    assert torch.equal(sources, torch.stack([s for _, s in expected]))
    acts, keep = hook_activations(lm, HOOK, ids[:4])
    got = torch.cat([b.acts for b in batches])[:4]
    assert torch.equal(torch.cat([b.keep for b in batches])[:4], keep)
    assert (got[~keep] == 0).all()
    torch.testing.assert_close(got[keep].float(), acts[keep].to(torch.bfloat16).float(), rtol=0, atol=0)
    later = CachedWindows(cache, lm.name, HOOK, lm.d_model, start=13)  # a resumed read
    part = later.take(6)
    assert torch.equal(part.ids, ids[13:19]) and torch.equal(part.acts, torch.cat([b.acts for b in batches])[13:19])
    assert later.take(100, with_acts=False).acts is None


def test_a_run_from_the_cache_matches_the_run_from_the_model(lm, cache, sae_folder, tmp_path):
    from saescope.sae.formats import load_sae

    sae = load_sae(str(sae_folder))
    common = {"tokens": 36 * CONTEXT, "context": CONTEXT, "batch_size": 3, "checkpoint_every": 2}
    from_model = extract_features(lm, sae, tmp_path / "model", progress=False, **common)
    from_cache = extract_features(lm, sae, tmp_path / "cache", progress=False, activations=str(cache), **common)
    assert from_cache.manifest["activations"] == str(cache) and from_cache.manifest["windows"] == 36
    assert from_cache.manifest["activations_dtype"] == "bfloat16"
    assert from_cache.manifest["tokens"] == from_model.manifest["tokens"]
    s1, s2 = from_model.stats, from_cache.stats
    alive = s1["count"] > 50
    assert alive.sum() > 50
    np.testing.assert_allclose(s2["count"][alive], s1["count"][alive], rtol=0.05)
    np.testing.assert_allclose(s2["mean"][alive], s1["mean"][alive], rtol=0.03)
    top1 = [pd.read_parquet(r / "examples.parquet").sort_values(["feature", "activation"], ascending=[True, False])
            .groupby("feature").head(1).set_index("feature")[["window", "position"]] for r in (tmp_path / "model",
                                                                                            tmp_path / "cache")]
    common_features = top1[0].index.intersection(top1[1].index)
    same = (top1[0].loc[common_features] == top1[1].loc[common_features]).all(axis=1).mean()
    assert same >= 0.9, same


def test_two_ranks_reading_the_cache_write_the_one_rank_run(lm, cache, sae_folder, tmp_path):
    args = ["features", "extract", "--sae", str(sae_folder), "--activations", str(cache), "--tokens",
            str(30 * CONTEXT), "--context", str(CONTEXT), "--batch-size", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for workers in (1, 2):
        done = subprocess.run([sys.executable, "-m", "saescope.cli.main", *args, "--workers", str(workers), "--out",
                               str(tmp_path / f"run{workers}")], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    s1, s2 = (pd.read_parquet(tmp_path / f"run{w}" / "stats.parquet") for w in (1, 2))
    assert (s1["count"] == s2["count"]).all() and (s1["max"] == s2["max"]).all()
    np.testing.assert_allclose(s2["mean"], s1["mean"], rtol=1e-6, equal_nan=True)
    key = ["feature", "activation", "window", "position"]
    e1, e2 = (pd.read_parquet(tmp_path / f"run{w}" / "examples.parquet").sort_values(key).reset_index(drop=True)
              for w in (1, 2))
    pd.testing.assert_frame_equal(e1, e2)


def test_caches_that_do_not_fit_are_named(lm, cache, sae_folder, tmp_path):
    from saescope.sae.formats import load_sae

    sae = load_sae(str(sae_folder))
    with pytest.raises(SaescopeError, match="pass --context 64"):
        extract_features(lm, sae, tmp_path / "a", progress=False, activations=str(cache), tokens=1024, context=128)
    with pytest.raises(SaescopeError, match="no such cache folder"):
        extract_features(lm, sae, tmp_path / "b", progress=False, activations=str(tmp_path / "nothing"), tokens=1024)
    old = tmp_path / "old" / HOOK  # a cache from before window files: shards but no token ids
    old.mkdir(parents=True)
    (old / "shard_00000.safetensors").write_bytes((cache / "shard_00000.safetensors").read_bytes())
    with pytest.raises(SaescopeError, match="without their token ids"):
        CachedWindows(old, lm.name, HOOK, lm.d_model)
    done = subprocess.run([sys.executable, "-m", "saescope.cli.main", "features", "extract", "--sae", str(sae_folder),
                           "--activations", str(cache), "--hook", "blocks.4.hook_resid_post", "--tokens", "512",
                           "--context", str(CONTEXT), "--out", str(tmp_path / "c")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_asking_for_more_tokens_than_cached_reads_all_of_it_and_says_so(cache, sae_folder, tmp_path):
    done = subprocess.run([sys.executable, "-m", "saescope.cli.main", "features", "extract", "--sae", str(sae_folder),
                           "--activations", str(cache), "--tokens", "100000", "--context", str(CONTEXT), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "all of it was read" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["windows"] == 40 and manifest["tokens_requested"] == 100000
