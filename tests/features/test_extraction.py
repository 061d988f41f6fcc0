"""Feature extraction end to end: numbers equal scipy on the same activations; resume = uninterrupted."""

import numpy as np
import pytest
import scipy.stats
import torch

from helpers import small_topk_sae
from saescope.activations.read import sink_mask
from saescope.corpus import load_corpus, token_windows
from saescope.errors import SaescopeError
from saescope.features.extract import extract_features
from saescope.features.run import FeatureRun
from saescope.model.hooks import forward_until
from saescope.sae.core import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def small_sae():
    return small_topk_sae(64, HOOK)


@pytest.fixture(scope="module")
def run(lm, small_sae, tmp_path_factory):
    return extract_features(lm, small_sae, tmp_path_factory.mktemp("r") / "run", tokens=1024, batch_size=4,
                            context=64, top_k=5, progress=False)


def test_statistics_equal_scipy_on_the_same_activations(lm, small_sae, run):
    windows = list(token_windows(lm.tokenizer, load_corpus("embedded", "train"), 64, seed=0))[:16]
    ids = torch.stack(windows)
    acts = forward_until(lm.model, [HOOK], ids)[HOOK]
    feats = small_sae.encode(acts)[~sink_mask(acts)].double().numpy()  # [n, 64]
    stats = run.stats
    assert run.manifest["tokens"] == len(feats) and len(stats) == 64
    live = feats.max(0) > 0
    np.testing.assert_allclose(stats["mean"], feats.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats["std"], feats.std(0), rtol=1e-4)
    np.testing.assert_allclose(stats["skewness"][live], scipy.stats.skew(feats[:, live]), rtol=1e-4)
    np.testing.assert_allclose(stats["kurtosis"][live], scipy.stats.kurtosis(feats[:, live]), rtol=1e-4)
    np.testing.assert_array_equal(stats["count"], (feats > 0).sum(0))
    best = run.examples(int(np.argmax(feats.max(0))))
    assert best.activation[0] == pytest.approx(feats.max(), rel=1e-5)
    for feature in np.flatnonzero(live)[:10]:
        np.testing.assert_allclose(run.examples(int(feature)).activation.values,
                                   np.sort(feats[:, feature])[::-1][:5][np.sort(feats[:, feature])[::-1][:5] > 0],
                                   rtol=1e-5)


def test_examples_carry_their_context_and_source(run):
    example = run.examples(int(run.stats["max"].idxmax())).iloc[0]
    assert example.context_tokens[example.center] == example.token
    assert example.context_acts[example.center] == pytest.approx(example.activation)
    assert example.doc_id.split("/")[0] in {"bbc", "boolq", "quac", "xsum"}
    assert len(run.logit_effects) == 64 * 2 * 10
    counts, edges = run.histograms
    np.testing.assert_array_equal(counts.sum(1), run.stats["count"].values)


def test_interrupted_extraction_resumes_to_the_same_result(lm, small_sae, run, tmp_path, monkeypatch):
    import saescope.features.extract as extraction

    calls = {"n": 0}
    original = extraction.encode_batch

    def die_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(extraction, "encode_batch", die_on_third)
    kwargs = dict(tokens=1024, batch_size=4, context=64, top_k=5, progress=False, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        extract_features(lm, small_sae, tmp_path / "r", **kwargs)
    with pytest.raises(SaescopeError, match="not a features run.*--resume"):
        FeatureRun.load(tmp_path / "r")
    with pytest.raises(SaescopeError, match="--resume"):
        extract_features(lm, small_sae, tmp_path / "r", **kwargs)
    monkeypatch.setattr(extraction, "encode_batch", original)
    resumed = extract_features(lm, small_sae, tmp_path / "r", resume=True, **kwargs)
    assert resumed.stats.drop(columns="top_tokens").equals(run.stats.drop(columns="top_tokens"))
    assert resumed.all_examples.drop(columns=["context_tokens", "context_acts"]).equals(
        run.all_examples.drop(columns=["context_tokens", "context_acts"]))


def test_bad_extraction_input(lm, small_sae, run, tmp_path):
    with pytest.raises(SaescopeError, match="positive"):
        extract_features(lm, small_sae, tmp_path / "x", tokens=0)
    with pytest.raises(SaescopeError, match="out of range"):
        run.check_feature(64)
    other = SAE(SAEConfig(576, 64, "topk", k=4, hook_name=HOOK))
    with pytest.raises(SaescopeError, match="another SAE"):
        run.check_sae(other)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(SaescopeError, match="empty"):
        extract_features(lm, small_sae, tmp_path / "y", corpus=str(tmp_path / "empty.txt"), tokens=100)


def test_dashboard_pages_hold_the_feature_numbers(run, tmp_path):
    from html.parser import HTMLParser

    from saescope.features.dashboard import write_dashboard

    feature = int(run.stats["max"].idxmax())
    folder = write_dashboard(run, tmp_path / "dash")
    live = int((run.stats["count"] > 0).sum())
    assert len(list(folder.glob("feature_*.html"))) == live
    index = (folder / "index.html").read_text()
    assert index.count("<tr>") == live + 1 and "<script" in index and "http" not in index.split("<body>")[1]

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stats, self.activations, self.current, self.svg = {}, [], None, False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.current = attrs.get("data-stat")
            if "data-activation" in attrs:
                self.activations.append(float(attrs["data-activation"]))
            self.svg |= tag == "svg"

        def handle_data(self, data):
            if self.current:
                self.stats[self.current] = data
                self.current = None

    page = Collect()
    page.feed((folder / f"feature_{feature}.html").read_text())
    row = run.stats.iloc[feature]
    assert int(page.stats["count"].replace(",", "")) == int(row["count"])
    assert float(page.stats["max"]) == pytest.approx(row["max"], rel=1e-5)
    assert float(page.stats["mean"]) == pytest.approx(row["mean"], rel=1e-5)
    np.testing.assert_allclose(page.activations, run.examples(feature).activation.values, rtol=1e-5)
    assert page.svg


SAEDASHBOARD_FEATURE_KEYS = {  # NeuronpediaDashboardFeature.to_dict() in SAEDashboard's neuronpedia_dashboard.py
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson", "correlated_features_indices",
    "correlated_features_l1", "correlated_features_pearson", "neg_str", "neg_values", "pos_str", "pos_values",
    "frac_nonzero", "freq_hist_data_bar_values", "freq_hist_data_bar_heights", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist",
    "activations"}


def test_the_neuronpedia_export_has_saedashboards_batch_shape(run, tmp_path):
    import json
    import math

    from helpers import saescope

    out = tmp_path / "np"
    result = saescope("features", "export-neuronpedia", str(run.path), "--out", str(out), "--model-id", "smollm2",
                      "--sae-set", "res-test", "--per-batch", "16")
    assert result.returncode == 0, result.stderr
    alive = [int(f) for f in run.stats.feature[run.stats.density > 0]]
    summary = json.loads((out / "export.json").read_text())
    assert summary["batches"] == math.ceil(len(alive) / 16) and summary["layer"] == 2
    assert summary["skipped_indexes"] == [f for f in range(run.d_sae) if f not in alive]
    features = []
    for i in range(summary["batches"]):
        batch = json.loads((out / f"batch-{i}.json").read_text())
        assert {k: batch[k] for k in ("model_id", "layer", "sae_set")} == {"model_id": "smollm2", "layer": 2,
                                                                          "sae_set": "res-test"}
        features += batch["features"]
    assert [f["feature_index"] for f in features] == alive
    first = features[0]
    assert set(first) == SAEDASHBOARD_FEATURE_KEYS
    info = run.feature(first["feature_index"])
    assert first["pos_str"] == list(info["promoted"].token) and first["neg_str"] == list(info["suppressed"].token)
    assert len(first["freq_hist_data_bar_values"]) == len(first["freq_hist_data_bar_heights"])  # parallel, not edges
    assert sum(first["freq_hist_data_bar_heights"]) == int(info["stats"]["count"])
    assert first["frac_nonzero"] == pytest.approx(info["stats"]["density"])
    top = info["examples"].iloc[0]
    assert first["activations"][0]["tokens"] == list(top.context_tokens)
    assert first["activations"][0]["values"] == pytest.approx(list(top.context_acts), abs=5e-4)
    assert first["activations"][0]["bin_min"] == -1 and first["activations"][0]["bin_max"] == pytest.approx(
        float(info["examples"].activation.max()), abs=5e-4)
    (tmp_path / "file").write_text("x")
    bad = saescope("features", "export-neuronpedia", str(run.path), "--out", str(tmp_path / "file"), "--model-id", "m",
                   "--sae-set", "s")
    assert bad.returncode == 2 and "is a file" in bad.stderr


NEURONPEDIA_TABLES = {  # field names of Neuronpedia's db_models (utils/neuronpedia-utils) that its importer reads
    "features": {"modelId", "layer", "index", "creatorId", "createdAt", "maxActApprox", "hasVector", "vector",
                 "vectorLabel", "vectorDefaultSteerStrength", "hookName", "topkCosSimIndices", "topkCosSimValues",
                 "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                 "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
                 "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1", "neg_str",
                 "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_heights",
                 "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
                 "decoder_weights_dist"},
    "activations": {"id", "tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue", "values",
                    "creatorId", "dataSource", "dataIndex", "dfaValues", "dfaTargetIndex", "dfaMaxValue", "createdAt",
                    "lossValues", "logitContributions", "binMin", "binMax", "binContains", "qualifyingTokenIndex"},
    "explanations": {"id", "modelId", "layer", "index", "description", "authorId", "embedding", "triggeredById",
                     "typeName", "explanationModelName", "notes", "createdAt"},
}


def test_the_neuronpedia_export_format_holds_neuronpedias_tables(run, tmp_path):
    import gzip
    import json
    import shutil

    from helpers import saescope
    from saescope.autointerp.explain import explain_features
    from saescope.features.run import FeatureRun

    copy = FeatureRun.load(shutil.copytree(run.path, tmp_path / "run"))
    alive = [int(f) for f in copy.stats.feature[copy.stats.density > 0]]
    explain_features(copy, alive[:5], progress=False)  # the top-token explainer, offline
    args = ["features", "export-neuronpedia", str(copy.path), "--format", "neuronpedia", "--model-id", "smollm2",
            "--sae-set", "res-test", "--per-batch", "16", "--creator", "tester"]
    assert saescope(*args, "--out", str(tmp_path / "a")).returncode == 0
    folder = tmp_path / "a" / "smollm2" / "2-res-test"
    heads = {name: json.loads((folder / f"{name}.jsonl").read_text()) for name in ("release", "model", "sourceset", "source")}
    assert heads["source"]["id"] == "2-res-test" and heads["source"]["setName"] == "res-test"
    assert heads["model"]["id"] == heads["sourceset"]["modelId"] == "smollm2"
    tables = {name: [] for name in NEURONPEDIA_TABLES}
    batches = sorted((folder / "features").glob("batch-*.jsonl.gz"))
    assert len(batches) == -(-len(alive) // 16)
    for name, rows in tables.items():
        for path in sorted((folder / name).glob("batch-*.jsonl.gz")):
            rows += [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
        assert rows and all(set(row) == NEURONPEDIA_TABLES[name] for row in rows), name
    assert [int(f["index"]) for f in tables["features"]] == alive
    feature = alive[0]
    mine = [a for a in tables["activations"] if a["index"] == str(feature)]
    examples = copy.feature(feature)["examples"]
    assert len(mine) >= len(examples) and mine[0]["tokens"] == list(examples.iloc[0].context_tokens)
    for a in mine:
        assert a["maxValue"] == max(a["values"]) and a["values"][a["maxValueTokenIndex"]] == a["maxValue"]
    first = next(f for f in tables["features"] if f["index"] == str(feature))
    assert first["maxActApprox"] == pytest.approx(float(examples.activation.max()), abs=5e-4)
    explained = {(e["index"], e["description"]) for e in tables["explanations"]}
    assert explained == {(str(f), e["explanation"]) for f in alive[:5] for e in copy.explanations()[f] if e["explanation"]}
    assert len({a["id"] for a in tables["activations"]}) == len(tables["activations"])  # ids are unique …
    assert saescope(*args, "--out", str(tmp_path / "b")).returncode == 0  # … and the same on a second export
    again = tmp_path / "b" / "smollm2" / "2-res-test" / "activations" / "batch-0.jsonl.gz"
    assert again.read_bytes() == (folder / "activations" / "batch-0.jsonl.gz").read_bytes()
    bad = saescope(*args[:3], "--format", "html", *args[5:], "--out", str(tmp_path / "c"))
    assert bad.returncode == 2 and "unknown --format 'html'" in bad.stderr
