"""Attribution graphs in the app: listed on the home page, drawn at /graphs/<id> with links to the feature
pages of a RUN extracted with a transcoder layer, and intervened on (API, and in a real Chromium against a
real server on a loopback port)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from helpers import saescope
from saescope.app.config import AppConfig
from saescope.app.server import create_app
from saescope.app.state import AppState
from saescope.errors import SaescopeError
from saescope.features.extract import extract_features
from saescope.sae.formats import load_sae
from saescope.sae.transcoders import TranscoderSet, make_transcoder

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def graph_app(lm, app_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("graphs")
    torch.manual_seed(0)
    saes = {layer: make_transcoder(layer, lm.d_model, 32, "topk", 4, lm.name) for layer in range(lm.n_layers)}
    TranscoderSet(saes, lm.name).save(root / "tc")
    result = saescope("graph", "attribute", "--prompt", "The nurse said that", "--transcoders", str(root / "tc"),
                      "--out", str(root / "nurse"), "--max-feature-nodes", "40", "--node-threshold", "1.0",
                      "--edge-threshold", "1.0")  # random transcoders: keep every node, so features are drawn
    assert result.returncode == 0, result.stderr
    exported = json.loads((root / "nurse" / "graph-neuronpedia.json").read_text())
    linked = int(_feature_nodes(exported)[0]["layer"])  # a RUN for the layer of a drawn feature
    layer_file = root / "tc" / f"layer_{linked}.safetensors"
    tc_run = extract_features(lm, load_sae(layer_file), root / "tc-run", tokens=512, batch_size=8, context=64, top_k=3,
                              progress=False, sae_name=str(layer_file))
    run, reports = app_run
    state = AppState.from_paths([run.path, tc_run.path], [reports], graphs=[root / "nurse"])
    return state, exported, linked


def _feature_nodes(exported: dict) -> list[dict]:
    return [n for n in exported["nodes"] if n["feature_type"] == "cross layer transcoder"]


def test_graphs_are_listed_drawn_and_intervened_on(graph_app):
    state, exported, linked = graph_app
    client = TestClient(create_app(state, AppConfig()), base_url=LOCAL)
    assert 'href="/graphs/nurse"' in client.get("/").text
    response = client.get("/graphs/nurse")
    assert response.status_code == 200, response.text[:500]
    page = response.text
    data = json.loads(page.split('<script id="graph-data" type="application/json">')[1].split("</script>")[0])
    assert data["intervene_url"] == "/api/graphs/nurse/intervene"
    assert data["feature_links"] == {str(linked): "/runs/tc-run/features/{feature}"}
    assert data["feature_api"] == {str(linked): "/api/runs/tc-run/features/{feature}?examples=3"}
    node = _feature_nodes(exported)[0]["node_id"]
    answer = client.post("/api/graphs/nurse/intervene", json={"nodes": [node], "scale": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["nodes"] == [node] and len(body["before"]) == 10 and len(body["after"]) == 10
    logits = [n for n in exported["nodes"] if n["feature_type"] == "logit"]
    assert [w["id"] for w in body["watch"]] == [int(n["node_id"].split("_")[1]) for n in logits]
    tolerance = 1e-3 if state.lm.dtype == torch.float32 else 2e-2  # the graph is float32; the app's model may be bf16
    assert body["watch"][0]["before"] == pytest.approx(logits[0]["token_prob"], abs=tolerance)  # the graph's prediction
    for nodes, status, message in (([node.replace("_", "-")], 422, ""), (["29_99_1"], 400, "outside the graph"),
                                   ([], 422, "")):
        bad = client.post("/api/graphs/nurse/intervene", json={"nodes": nodes})
        assert bad.status_code == status and message in bad.text
    assert client.post("/api/graphs/nope/intervene", json={"nodes": [node]}).status_code == 404
    assert client.get("/graphs/nope").status_code == 404
    assert client.post("/api/graphs/nurse/intervene", json={"nodes": [node], "scale": 1e9}).status_code == 400


def test_bad_graph_folders_are_refused(app_run, tmp_path):
    run, _ = app_run
    with pytest.raises(SaescopeError, match="is not a graph folder"):
        AppState.from_paths([run.path], graphs=[tmp_path])


def test_pin_a_feature_and_rerun_it_ablated_in_chromium(graph_app):
    import uvicorn

    from helpers import chromium_browser

    state, exported, linked = graph_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state, AppConfig()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        with chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}/graphs/nurse")
            page.click("#intervene-run")
            assert "Pin at least one feature" in page.inner_text("#intervene-result")
            node = next(n for n in _feature_nodes(exported) if n["layer"] == str(linked))
            page.locator(f'circle[data-id="{node["node_id"]}"]').click()
            feature = node["node_id"].split("_")[1]
            assert page.get_attribute("#feature-link", "href") == f"/runs/tc-run/features/{feature}"
            page.wait_for_selector("#feature-explanation", timeout=30_000)  # the RUN's card, fetched from the API
            assert "Top tokens:" in page.inner_text("#feature-details")
            page.click("#intervene-run")
            page.wait_for_selector("#intervene-table", timeout=60_000)
            rows = page.locator("#intervene-table tr")
            assert rows.count() > 2
            result = page.evaluate("window.graphView.lastResult()")
            assert result["nodes"] == [node["node_id"]] and result["scale"] == 0
            other = next(n for n in exported["nodes"] if n["node_id"] != node["node_id"])
            page.locator(f'circle[data-id="{other["node_id"]}"]').click()
            page.fill("#group-name", "nurse features")
            page.click("#group")
            assert page.evaluate("window.graphView.supernodes()") == [["nurse features", node["node_id"], other["node_id"]]]
            assert page.locator("rect.supernode").count() == 1 and "nurse features" in page.inner_text("#groups-list")
            assert not errors
    finally:
        server.should_exit = True
        thread.join(timeout=30)
