"""Attribution graphs: exact linear attribution on tiny models of several families, pruning, scores,
circuit-tracer / Neuronpedia JSON, save/load, the CLI on the embedded model, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import saescope, tiny_model
from saescope.circuits.attribution_graph import Graph, attribute_ids
from saescope.circuits.graph_export import neuronpedia_json
from saescope.circuits.graph_prune import estimated_influence, graph_scores, logit_weights, prune
from saescope.errors import SaescopeError
from saescope.sae.transcoders import TranscoderSet, make_transcoder

IDS = torch.tensor([5, 17, 3, 99, 42, 7])


def _transcoders(d: int, layers: int = 2, width: int = 64, skip: bool = False) -> TranscoderSet:
    torch.manual_seed(1)
    saes = {layer: make_transcoder(layer, d, width, "relu", None, None, skip) for layer in range(layers)}
    for sae in saes.values():
        with torch.no_grad():
            sae.b_enc.fill_(0.05)
            sae.b_dec.zero_()  # no bias terms: a target's incoming edges must add up to it exactly
            if sae.W_skip is not None:  # a live linear path: still exact, with no nodes of its own
                sae.W_skip.normal_(0, 0.05 * d ** -0.5)
        sae.requires_grad_(False)
    return TranscoderSet(saes)


# (family, skip transcoders): the Mistral case runs skip transcoders
CASES = {"qwen2": False, "mistral": True}


@pytest.fixture(scope="module", params=list(CASES))
def graph(request):
    model = tiny_model(request.param).float()
    model.skip = CASES[request.param]
    result = attribute_ids(model, _transcoders(model.config.hidden_size, skip=model.skip), IDS, progress=False,
                           batch_size=7)
    return model, result


def test_incoming_edges_add_up_to_each_target(graph):
    model, g = graph
    with torch.no_grad():
        logits = model(input_ids=IDS[None]).logits[0, -1].float()
    for i, token in enumerate(g.logit_tokens):  # a logit target is the logit minus the mean logit
        assert float(g.adjacency[g.logit_index(i)].sum()) == pytest.approx(float(logits[token] - logits.mean()), abs=1e-4)
    for i in range(0, g.n_features, 17):  # a feature's target is its pre-activation (minus the encoder bias)
        assert float(g.adjacency[i].sum()) == pytest.approx(float(g.activations[i]) - 0.05, abs=1e-4)
    assert (g.features[:, 1] > 0).all()  # the sink (position 0) has no features
    layer, pos = g.features[:, 0], g.features[:, 1]
    later = (g.features[None, :, 0] >= layer[:, None]) | (g.features[None, :, 1] > pos[:, None])
    assert not g.adjacency[:g.n_features, :g.n_features][later].any()  # no edge from a later layer or position


def test_pruning_scores_and_the_neuronpedia_json(graph, tmp_path):
    _, g = graph
    pruned = prune(g, node_threshold=0.8, edge_threshold=0.98)
    assert pruned.node_mask[g.token_index(0):].all()  # tokens and logits always stay
    kept = pruned.node_mask[:g.n_features]
    assert 0 < int(kept.sum()) < g.n_features
    assert pruned.edge_mask[:, :g.n_features][:, kept].any(0).all()  # every kept feature has an outgoing edge
    replacement, completeness = graph_scores(g)
    assert 0 < replacement < 1 and 0 < completeness < 1
    exported = neuronpedia_json(g, pruned, "test", "scan", 0.8)
    assert set(exported) == {"metadata", "qParams", "nodes", "links"}
    ids = {n["node_id"] for n in exported["nodes"]}
    assert len(ids) == len(exported["nodes"]) and all(link["source"] in ids and link["target"] in ids
                                                      for link in exported["links"])
    kinds = {n["feature_type"] for n in exported["nodes"]}
    assert {"embedding", "logit", "cross layer transcoder"} <= kinds
    layer, pos, feature = (int(v) for v in g.features[int(kept.nonzero()[0])])
    assert f"{layer}_{feature}_{pos}" in ids and f"E_{int(IDS[0])}_0" in ids
    logit = next(n for n in exported["nodes"] if n["feature_type"] == "logit" and n["is_target_logit"])
    assert logit["node_id"] == f"3_{g.logit_tokens[0]}_{len(IDS) - 1}" and logit["layer"] == "3"
    json.dumps(exported, allow_nan=False)
    g.save(tmp_path / "g")
    back = Graph.load(tmp_path / "g")
    assert torch.equal(back.adjacency, g.adjacency) and back.logit_tokens == g.logit_tokens
    assert torch.equal(back.features, g.features) and back.n_layers == 2


def test_a_feature_budget_computes_the_most_influential_rows(graph):
    model, full = graph
    budget = attribute_ids(model, _transcoders(model.config.hidden_size, skip=model.skip), IDS, progress=False, batch_size=4,
                           max_feature_nodes=10)
    assert budget.n_features == 10 and budget.info["active_features"] == full.n_features
    kept = [next(i for i in range(full.n_features) if torch.equal(full.features[i], f)) for f in budget.features]
    columns = torch.tensor(kept + list(range(full.n_features, full.adjacency.shape[0])))
    rows = torch.tensor(kept + list(range(full.logit_index(0), full.adjacency.shape[0])))
    mine = torch.cat([torch.arange(10), torch.arange(budget.logit_index(0), budget.adjacency.shape[0])])
    assert torch.allclose(budget.adjacency[mine], full.adjacency[rows][:, columns], atol=1e-5)  # the same edges
    influence = estimated_influence(full.adjacency, logit_weights(full))[:full.n_features]
    assert influence[kept].min() >= influence.sort(descending=True).values[30]  # among the most influential


def test_models_and_sets_that_cannot_be_attributed():
    gpt2 = tiny_model("gpt2")
    with pytest.raises(SaescopeError, match="separate q_proj / k_proj"):
        attribute_ids(gpt2, _transcoders(32), IDS, progress=False)
    qwen = tiny_model("qwen2")
    with pytest.raises(SaescopeError, match="layer 1 is missing from the set"):
        attribute_ids(qwen, _transcoders(32, layers=1), IDS, progress=False)
    with pytest.raises(SaescopeError, match="logit_probability must be in"):
        attribute_ids(qwen, _transcoders(32), IDS, logit_probability=1.5, progress=False)


def test_graph_cli_on_the_embedded_model(lm, tmp_path):
    torch.manual_seed(0)
    saes = {layer: make_transcoder(layer, 576, 32, "topk", 2, lm.name) for layer in range(lm.n_layers)}
    TranscoderSet(saes, lm.name).save(tmp_path / "tc")
    out = tmp_path / "graph"
    result = saescope("graph", "attribute", "--prompt", "The nurse said that", "--transcoders", str(tmp_path / "tc"),
                      "--out", str(out), "--max-feature-nodes", "12", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["prompt_tokens"] == 4 and summary["features"] == 12  # the budget bounds the graph
    assert 0 <= summary["replacement_score"] <= 1 and 0 <= summary["completeness_score"] <= 1
    exported = json.loads((out / "graph-neuronpedia.json").read_text())
    assert exported["metadata"]["prompt_tokens"] == ["The", " nurse", " said", " that"]
    assert " she" in summary["top_logits"] or " he" in summary["top_logits"]
    loaded = Graph.load(out)
    assert loaded.n_features == 12 and loaded.info["active_features"] > 12
    bad = saescope("graph", "attribute", "--prompt", "x", "--transcoders", str(tmp_path / "tc"), "--out",
                   str(tmp_path / "g2"), "--node-threshold", "1.5")
    assert bad.returncode == 2 and "node_threshold must be between 0 and 1" in bad.stderr
    assert not (tmp_path / "g2").exists()
    (tmp_path / "file").write_text("x")
    bad = saescope("graph", "attribute", "--prompt", "x", "--transcoders", str(tmp_path / "tc"), "--out",
                   str(tmp_path / "file"))
    assert bad.returncode == 2 and "is a file" in bad.stderr
    TranscoderSet({0: saes[0]}, lm.name).save(tmp_path / "one")
    bad = saescope("graph", "attribute", "--prompt", "x", "--transcoders", str(tmp_path / "one"), "--out",
                   str(tmp_path / "g3"))
    assert bad.returncode == 2 and "layer 1 is missing from the set" in bad.stderr


def test_the_graph_page_pans_zooms_highlights_and_pins_in_chromium(graph, tmp_path):
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (as root: apt-get install chromium)")
    from saescope.circuits.graph_html import graph_html

    _, g = graph
    g.prompt = "a prompt"
    g.token_strings = ['<img src=x onerror="window.PWNED=1">', "</script><b>x</b>", "c", "d", "e", "f"]
    exported = neuronpedia_json(g, prune(g), "t", "scan", 0.8)
    (tmp_path / "graph.html").write_text(graph_html(exported, feature_link="/features/{feature}?layer={layer}"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((tmp_path / "graph.html").as_uri())
        assert not errors
        assert page.locator("circle.node").count() == len(exported["nodes"])
        assert page.locator("line.edge").count() == len(exported["links"])
        assert page.evaluate("window.PWNED") is None  # labels are text, never HTML
        feature = next(n for n in exported["nodes"] if n["feature_type"] == "cross layer transcoder")
        node = page.locator(f'circle[data-id="{feature["node_id"]}"]')
        node.hover()
        assert page.locator("line.edge.hot").count() > 0 and page.locator("circle.node.dim").count() > 0
        node.click()
        assert page.evaluate("window.graphView.pinned()") == [feature["node_id"]]
        assert feature["node_id"] in page.inner_text("#card") and page.locator("#card-edges tr").count() > 0
        layer, feat = feature["layer"], feature["node_id"].split("_")[1]
        assert page.get_attribute("#feature-link", "href") == f"/features/{feat}?layer={layer}"
        page.keyboard.press("Escape")
        assert page.evaluate("window.graphView.pinned()") == []
        page.mouse.move(600, 400)
        page.mouse.wheel(0, -300)
        assert page.evaluate("window.graphView.zoom()") > 1
        browser.close()


def test_each_edge_is_what_removing_its_source_changes_in_the_frozen_model(graph):
    from saescope.circuits.attribution_graph import read_prompt
    from saescope.circuits.replacement import Frozen, linearised

    model, g = graph
    transcoders = _transcoders(model.config.hidden_size, skip=model.skip)
    read = read_prompt(model, transcoders, IDS)
    frozen = Frozen()

    def logit(plan):
        with torch.no_grad(), linearised(model, transcoders, plan, frozen=frozen):
            logits = model(input_ids=IDS[None]).logits[0, -1]
        return float(logits[g.logit_tokens[0]] - logits.mean())

    full = logit(read.plan)  # records the norm scales and attention inputs; later passes replay them
    strongest = g.adjacency[g.logit_index(0), :g.n_features].abs().topk(5).indices
    for source in strongest.tolist():
        layer, pos, feature = (int(v) for v in g.features[source])
        plan = {k: (p, f, v.clone(), e) for k, (p, f, v, e) in read.plan.items()}
        at = int(((plan[layer][0] == pos) & (plan[layer][1] == feature)).nonzero()[0])
        plan[layer][2][0, at] = 0.0
        assert full - logit(plan) == pytest.approx(float(g.adjacency[g.logit_index(0), source]), abs=1e-5)
