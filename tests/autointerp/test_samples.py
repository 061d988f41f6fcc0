"""Sampled contexts: where they come from, what they hold, and that batching does not change them."""

from dataclasses import replace
from itertools import islice

import pandas as pd
import pytest
import torch

from saescope.activations.read import hook_activations
from saescope.corpus import load_corpus, windows_with_sources
from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun
from saescope.features.samples import load_samples, quantile_edges, sample_contexts


def test_samples_are_held_out_contexts_with_the_right_activations(lm, small_sae, run, sampling):
    SAMPLING, HOOK = sampling, small_sae.cfg.hook_name
    table = load_samples(run)
    assert set(table.feature) <= set(range(12)) and set(table.split) == {"explain", "score"}
    assert table.groupby(["feature", "split", "quantile"]).size().max() <= SAMPLING.per_bin
    assert (table[table["quantile"] >= 0].activation > 0).all() and (table[table["quantile"] < 0].activation == 0).all()
    assert set(table["quantile"]) <= {-1, 0, 1, 2}
    # recompute: the context around (window, position) in the held-out stream, and the feature's activations there
    docs = load_corpus("embedded", "heldout")
    windows = list(islice(windows_with_sources(lm.tokenizer, docs, 64, seed=0), int(table.window.max()) + 1))
    for row in table.sample(12, random_state=0).itertuples():
        ids, sources = windows[row.window]
        acts, _ = hook_activations(lm, HOOK, ids[None])
        feature_acts = small_sae.encode(acts)[0, :, row.feature]
        lo = max(0, row.position - SAMPLING.left)
        expected = [lm.tokenizer.decode([int(i)]) for i in ids[lo:row.position + SAMPLING.right + 1]]
        assert list(row.context_tokens) == expected and row.center == row.position - lo
        recorded = torch.tensor(list(row.context_acts), dtype=torch.float32)
        assert torch.allclose(recorded, feature_acts[lo:row.position + SAMPLING.right + 1], atol=1e-4)
        assert abs(row.activation - float(feature_acts[row.position])) < 1e-4
        assert ("score" if int(sources[row.position, 0]) % 2 else "explain") == row.split


def test_quantile_bins_follow_the_run_histogram(run):
    edges = quantile_edges(run, [0, 1, 2], 3)
    assert edges.shape == (3, 2) and (edges[:, 1] >= edges[:, 0]).all()
    table = load_samples(run)
    mine = table[(table.feature == 1) & (table["quantile"] >= 0)]
    for row in mine.itertuples():  # each sample's bin is the one its activation falls in
        assert row.quantile == int((row.activation > edges[1]).sum())


def test_batch_size_does_not_change_the_samples(lm, small_sae, run, sampling, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    other = sample_contexts(lm, small_sae, FeatureRun.load(copy), list(range(12)), replace(sampling, batch_size=3),
                            progress=False)
    pd.testing.assert_frame_equal(other.drop(columns=["context_acts"]),
                                  load_samples(run).drop(columns=["context_acts"]))


def test_a_run_without_samples_says_which_command_makes_them(run, tmp_path):
    import shutil

    copy = tmp_path / "bare"
    shutil.copytree(run.path, copy)
    (copy / "samples.parquet").unlink()
    with pytest.raises(SaescopeError, match="saescope features sample"):
        load_samples(FeatureRun.load(copy))


def test_feature_pages_and_the_neuronpedia_export_show_the_quantile_samples(run, sampling, tmp_path):
    import json

    from saescope.features.dashboard import quantile_groups, write_dashboard
    from saescope.features.neuronpedia_export import export_neuronpedia

    samples = run.optional_table("samples.parquet")
    feature = int(samples.feature[samples["quantile"] >= 0].iloc[0])
    groups = quantile_groups(run, feature)
    explain = samples[(samples.feature == feature) & (samples.split == "explain")]
    assert [g["quantile"] for g in groups] == sorted(set(explain["quantile"]), reverse=True)
    assert sum(len(g["examples"]) for g in groups) == len(explain)
    page = (write_dashboard(run, tmp_path / "dash", [feature]) / f"feature_{feature}.html").read_text()
    assert 'id="quantiles"' in page and page.count("data-quantile=") == len(groups)
    first = explain.iloc[0]
    assert f'title="{first.context_acts[0]:.3f}"' in page  # every token shows its activation on hover
    export_neuronpedia(run, tmp_path / "np", "m", "s", features=[feature])
    record = json.loads((tmp_path / "np" / "batch-0.json").read_text())["features"][0]
    intervals = [a for a in record["activations"] if a["bin_min"] != -1]
    assert len(intervals) == int((explain["quantile"] >= 0).sum())
    assert all(a["bin_contains"] == round(1 / sampling.bins, 4) and a["bin_min"] <= a["bin_max"] for a in intervals)
