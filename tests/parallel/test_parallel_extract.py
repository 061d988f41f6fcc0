"""Data-parallel extraction: accumulators merge exactly, and a 2-process RUN (torchrun, gloo) equals the 1-process one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from saescope.features.accumulator import FeatureAccumulator
from saescope.features.merge import merge_states
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import save_sae

pytestmark = pytest.mark.embedded  # runs the embedded model in subprocesses


def _batch(seed: int, d_sae: int = 16, batch: int = 3, seq: int = 10):
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(batch, seq, d_sae, generator=g)
    feats = torch.where(feats > 0.7, (feats * 8).round() / 4, torch.zeros(()))  # few values: many ties
    ids = torch.randint(0, 50, (batch, seq), generator=g)
    sources = torch.stack([torch.full((batch, seq), seed), torch.arange(seq).expand(batch, seq)], -1)
    keep = torch.ones(batch, seq, dtype=torch.bool)
    keep[:, 0] = False
    return feats, ids, sources, keep


def test_merged_accumulators_equal_one_that_saw_every_batch():
    batches = [_batch(seed) for seed in range(6)]
    single, shards = FeatureAccumulator(16, 50, top_k=5, top_tokens=6), [
        FeatureAccumulator(16, 50, top_k=5, top_tokens=6) for _ in range(3)]
    for index, (feats, ids, sources, keep) in enumerate(batches):
        first_window = index * 3
        single.update(feats, ids, sources, keep, first_window)
        shards[index % 3].update(feats, ids, sources, keep, first_window)
    merged = FeatureAccumulator(16, 50, top_k=5, top_tokens=6)
    merged.load_state_dict(merge_states([s.state_dict() for s in shards]))
    for key, value in single.stats().items():
        torch.testing.assert_close(merged.stats()[key], value, rtol=1e-9, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(merged.state["hist"], single.state["hist"], rtol=0, atol=0)
    expected, got = single.sorted_top_examples(), merged.sorted_top_examples()
    for key in expected:  # the same rows in the same order: ties in corpus order, not in buffer order
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
        torch.testing.assert_close(_canonical(got, key), got[key], rtol=0, atol=0)
    # top tokens: the same values per feature; the same tokens above each feature's last (tied) value
    got_tokens, expected_tokens = _token_table(merged), _token_table(single)
    for f in range(16):
        mine, theirs = [r for r in got_tokens if r[0] == f], [r for r in expected_tokens if r[0] == f]
        assert sorted(r[2] for r in mine) == sorted(r[2] for r in theirs)
        if theirs:
            edge = min(r[2] for r in theirs)
            assert {r[1] for r in mine if r[2] > edge} == {r[1] for r in theirs if r[2] > edge}


def _canonical(examples: dict, key: str) -> torch.Tensor:
    """Examples ordered by (value desc, window, position): the same set in the same order."""
    loc = examples["top_location"]
    out = []
    for f in range(examples["top_values"].shape[0]):
        v, w, p = examples["top_values"][f], loc[f, :, 0], loc[f, :, 1]
        order = np.lexsort((p.numpy(), w.numpy(), -v.numpy()))
        out.append(examples[key][f][torch.tensor(order)])
    return torch.stack(out)


def _token_table(acc: FeatureAccumulator) -> list[tuple]:
    feature, token, best = acc.top_tokens()
    return sorted(zip(feature.tolist(), token.tolist(), best.tolist()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parallel")
    torch.manual_seed(0)
    sae = save_sae(SAE(SAEConfig(576, 256, "topk", k=8, hook_name="blocks.3.hook_resid_post")), folder / "sae")
    common = ["features", "extract", "--sae", str(sae), "--tokens", "2048", "--context", "64", "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # both runs compute each batch with one thread
    out = {}
    for workers in (1, 2):
        done = subprocess.run([sys.executable, "-m", "saescope.cli.main", *common, "--workers", str(workers),
                               "--out", str(folder / f"run{workers}")], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        out[workers] = folder / f"run{workers}"
    return out


def test_two_ranks_write_the_run_one_rank_writes(runs):
    one, two = runs[1], runs[2]
    assert not list(two.glob("checkpoint*"))
    s1, s2 = pd.read_parquet(one / "stats.parquet"), pd.read_parquet(two / "stats.parquet")
    for column in ("count", "max"):
        assert (s1[column] == s2[column]).all()
    for column in ("mean", "std", "skewness", "kurtosis"):
        np.testing.assert_allclose(s2[column], s1[column], rtol=1e-6, equal_nan=True)
    h1, h2 = load_file(one / "histograms.safetensors"), load_file(two / "histograms.safetensors")
    assert torch.equal(h1["counts"], h2["counts"])
    e1, e2 = (pd.read_parquet(r / "examples.parquet") for r in (one, two))
    pd.testing.assert_frame_equal(e1, e2)  # rows and order, ranks included (tied examples in corpus order)
    assert (e1.groupby("feature").activation.apply(lambda a: a.is_monotonic_decreasing)).all()
    t1, t2 = (pd.read_parquet(r / "top_tokens.parquet").sort_values(["feature", "token_id"]).reset_index(drop=True)
              for r in (one, two))
    pd.testing.assert_frame_equal(t1, t2)


def test_resume_with_another_number_of_workers_is_refused(runs, tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoint-rank0-of-2").mkdir(parents=True)
    (folder / "checkpoint-rank0-of-2" / "state.json").write_text("{}")
    done = subprocess.run([sys.executable, "-m", "saescope.cli.main", "features", "extract", "--tokens", "256",
                           "--out", str(folder), "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "checkpoint-rank0-of-2" in done.stderr and "--workers" in done.stderr


def test_equal_activations_keep_the_earliest_examples_whatever_the_batching():
    """Identical contexts give identical activations: of equal ones, the earliest (window, position) stay."""
    def feed(acc, windows_per_batch):
        for first in range(0, 6, windows_per_batch):
            n = min(windows_per_batch, 6 - first)
            feats = torch.zeros(n, 4, 1)
            feats[:, 2, 0] = 1.0                      # the same activation in every window but window 3
            if first <= 3 < first + n:
                feats[3 - first, 2, 0] = 2.0
            ids = torch.arange(n * 4).view(n, 4)
            sources = torch.stack([torch.arange(first, first + n)[:, None].expand(n, 4), torch.arange(4).expand(n, 4)], -1)
            acc.update(feats, ids, sources, torch.ones(n, 4, dtype=torch.bool), first)
        return sorted(acc.sorted_top_examples()["top_location"][0, :, 0].tolist())

    assert feed(FeatureAccumulator(1, 50, top_k=3), 1) == [0, 1, 3]
    assert feed(FeatureAccumulator(1, 50, top_k=3), 4) == [0, 1, 3]
    assert feed(FeatureAccumulator(1, 50, top_k=3), 6) == [0, 1, 3]
