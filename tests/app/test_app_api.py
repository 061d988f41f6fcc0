"""The app's JSON API and pages through FastAPI's TestClient, on the embedded model and a real RUN."""

import threading
import time

import pytest
from fastapi.testclient import TestClient

from saescope.app.config import AppConfig
from saescope.app.jobs import Busy, JobQueue
from saescope.app.server import create_app
from saescope.app.state import AppState
from saescope.model.generation import generate

LOCAL = "http://127.0.0.1"  # the app answers loopback Host names only (TestClient's default is "testserver")
STEER = {"run": "run", "prompt": "The nurse said that", "edits": [{"feature": 5, "op": "add", "value": 40.0}],
         "max_new_tokens": 8}


@pytest.fixture(scope="module")
def state(app_run):
    run, reports = app_run
    return AppState.from_paths([run.path], [reports])


@pytest.fixture(scope="module")
def client(state):
    return TestClient(create_app(state, AppConfig(max_new_tokens=16)), base_url=LOCAL)


def test_runs_features_and_one_feature(client, app_run):
    run, _ = app_run
    assert [r["id"] for r in client.get("/api/runs").json()] == ["run"]
    page = client.get("/api/runs/run/features?sort=max&limit=5").json()
    maxima = [r["max"] for r in page["rows"]]
    assert page["total"] == 4608 and maxima == sorted(maxima, reverse=True) and maxima[0] == run.stats["max"].max()
    feature = int(run.stats.feature[run.stats["count"] > 0].iloc[0])
    info = client.get(f"/api/runs/run/features/{feature}").json()
    assert info["stats"]["count"] == run.stats["count"].iloc[feature]
    cosines = [n["cosine"] for n in info["neighbours"]]
    assert len(cosines) == 8 and cosines == sorted(cosines, reverse=True)
    assert feature not in [n["feature"] for n in info["neighbours"]]
    assert info["explanations"] and info["explanations"][0]["explainer"] == "top_tokens"
    assert len(info["examples"]) == min(5, int(run.stats["count"].iloc[feature]))


def test_search_by_token_text_and_explanation(client, app_run):
    run, _ = app_run
    row = run.top_tokens[run.top_tokens["rank"] == 0].iloc[0]
    found = client.get("/api/runs/run/search", params={"token": row.token, "n": 200}).json()
    assert int(row.feature) in [r["feature"] for r in found]
    active = client.get("/api/runs/run/search", params={"text": "The nurse said that she was tired."}).json()
    assert active and all(r["activation"] > 0 for r in active)
    explained = {f: e[0]["explanation"] for f, e in run.explanations().items() if e[0]["explanation"]}
    feature, words = next(iter(explained.items()))
    best = client.get("/api/runs/run/search", params={"explanation": words, "n": 64}).json()
    assert feature in [r["feature"] for r in best if r["similarity"] > best[0]["similarity"] - 1e-6]


def test_scores_with_intervals_appear_beside_feature_ids(client, app_run):
    """Feature table, feature API, feature page and its neighbours, search: each shows a feature's explanation
    with its score and 95 % interval (scores of five features written as ``saescope score`` writes them)."""
    import pandas as pd

    from saescope.features.run import write_parquet

    run, _ = app_run
    explained = run.explanations()
    scored = [f for f in range(64) if explained.get(f) and explained[f][0]["explanation"]][:5]
    path = run.path / "scores.parquet"
    write_parquet(path, pd.DataFrame([{"feature": f, "score": 0.8, "score_low": 0.61, "score_high": 0.93, "auc": 0.8,
                                       "n_pos": 10, "n_neg": 10, "failed": 0, "explainer": "top_tokens",
                                       "explainer_model": "", "control": "none", "scorer": "embedding"}
                                      for f in scored]))
    try:
        feature = scored[0]
        label = f"{explained[feature][0]['explanation']} (embedding 0.80 [0.61, 0.93])"
        info = client.get(f"/api/runs/run/features/{feature}").json()
        assert info["explanation_label"] == label and info["explanations"][0]["intervals"] == {"embedding": [0.61, 0.93]}
        rows = client.get("/api/runs/run/features?sort=feature&descending=false&limit=64").json()["rows"]
        assert next(r for r in rows if r["feature"] == feature)["explanation"] == label
        page = client.get(f"/runs/run/features/{feature}").text
        assert 'class="interval" title="95 % bootstrap interval">[0.61, 0.93]</span>' in page
        found = client.get("/api/runs/run/search", params={"explanation": explained[feature][0]["explanation"]}).json()
        assert next(r for r in found if r["feature"] == feature)["scores"] == "embedding 0.80 [0.61, 0.93]"
    finally:
        path.unlink()


def test_steering_matches_generate_and_the_stream_matches_steering(client, state):
    answer = client.post("/api/steer", json=STEER).json()
    plain = generate(state.lm, [STEER["prompt"]], None, max_new_tokens=8, temperature=0)[0][0]
    assert answer["plain"] == plain and answer["steered"] != plain and answer["tokens_per_s"] > 0
    events = [line[6:] for line in client.post("/api/steer/stream", json=STEER).text.split("\n\n") if line.startswith("data: ")]
    import json

    pieces = [json.loads(e) for e in events]
    text = {w: "".join(p.get("text", "") for p in pieces if p.get("which") == w) for w in ("plain", "steered")}
    assert text == {"plain": answer["plain"], "steered": answer["steered"]} and pieces[-1] == {"finished": True}


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("get", "/api/runs/..%2F..%2Fetc/features", None, 404),
    ("get", "/api/runs/run/features/4608", None, 404),
    ("get", "/api/runs/run/features/1000000000000000000000000000000", None, (404, 422)),
    ("get", "/api/runs/run/features?sort=__class__", None, 400),
    ("get", "/api/runs/run/search?token=x&text=y", None, 400),
    ("get", "/reports/..%2F..%2Fetc%2Fpasswd", None, 404),
    ("get", "/runs/nope", None, 404),
    ("post", "/api/steer", {**STEER, "prompt": "word " * 10_000}, 400),
    ("post", "/api/steer", {**STEER, "max_new_tokens": 10**9}, 400),
    ("post", "/api/steer", {**STEER, "edits": [{"feature": 5, "op": "explode", "value": 1}]}, 422),
    ("post", "/api/steer", {**STEER, "edits": [{"feature": 5, "value": 1e300}]}, 400),
    ("post", "/api/steer", {**STEER, "edits": [{"feature": 99999, "value": 1}]}, 404),
    ("post", "/api/steer", {**STEER, "edits": [{"feature": 5, "value": 1}] * 9}, 400),
    ("post", "/api/steer", {**STEER, "run": "../run"}, 422),
    ("post", "/api/steer", {**STEER, "prompt": ""}, 422),
])
def test_bad_requests_get_clear_errors_and_the_server_lives(client, method, path, body, status):
    answer = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert answer.status_code in (status if isinstance(status, tuple) else (status,)), answer.text
    assert "detail" in answer.json()
    assert client.get("/api/runs").status_code == 200


def test_nan_and_malformed_json_are_refused(client):
    nan = b'{"run": "run", "prompt": "x", "edits": [{"feature": 5, "value": NaN}]}'
    for raw in (nan, b'{"run": "run", "prompt": ', b"[]"):
        answer = client.post("/api/steer", content=raw, headers={"content-type": "application/json"})
        assert answer.status_code == 422 and "detail" in answer.json()


def occupy(jobs: JobQueue, gate: threading.Event) -> None:
    """One job running on the model thread and one waiting: the queue (size 1) is full."""
    jobs.submit(gate.wait)
    deadline = time.monotonic() + 10
    while not jobs.queue.empty() and time.monotonic() < deadline:  # the thread has taken the first job
        time.sleep(0.01)
    jobs.submit(gate.wait)


def test_a_full_queue_answers_503(state):
    app = create_app(state, AppConfig(queue_size=1))
    release = threading.Event()
    occupy(app.state.jobs, release)
    try:
        answer = TestClient(app, base_url=LOCAL).post("/api/steer", json=STEER)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
    finally:
        release.set()
    jobs = JobQueue(maxsize=1)
    gate = threading.Event()
    occupy(jobs, gate)
    with pytest.raises(Busy):
        jobs.submit(lambda: None)
    gate.set()


def test_a_token_guards_every_route(state):
    guarded = TestClient(create_app(state, token="s3cret"), base_url=LOCAL)
    assert guarded.get("/api/runs").status_code == 401
    assert guarded.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert guarded.get("/?token=s3cret").status_code == 200
    assert guarded.get("/api/runs").status_code == 200  # the cookie set by ?token=


def test_pages_render(client):
    assert "run" in client.get("/").text and "bias-report" in client.get("/").text
    assert 'href="/runs/run/features/' in client.get("/runs/run").text
    page = client.get("/runs/run/features/5").text
    assert 'id="neighbours"' in page and "/steer?run=run&amp;feature=5" in page
    assert 'id="steer-form"' in client.get("/steer").text
    assert client.get("/reports/bias-report").text.count("Bias report") == 1
    assert client.get("/openapi.json").json()["paths"]["/api/steer"]


def test_other_host_names_are_refused_and_large_bodies_too(state):
    """DNS rebinding: a page on another origin reaches the loopback server under its own name (the Host header)."""
    app = create_app(state, AppConfig(max_new_tokens=16))
    for base in ("http://rebind.attacker.example", "http://rebind.attacker.example:8000", "http://testserver"):
        answer = TestClient(app, base_url=base).get("/api/runs")
        assert answer.status_code == 421 and "not served here" in answer.json()["detail"], base
    for base in ("http://localhost:8000", "http://127.0.0.1", "http://[::1]:8000"):
        assert TestClient(app, base_url=base).get("/api/runs").status_code == 200, base
    named = create_app(state, AppConfig(allowed_hosts="lab.example.org"))
    assert TestClient(named, base_url="http://lab.example.org").get("/api/runs").status_code == 200
    big = TestClient(app, base_url=LOCAL).post("/api/steer", content=b"{" + b" " * (2 << 20) + b"}",
                                                headers={"content-type": "application/json"})
    assert big.status_code == 413


def test_the_api_page_works_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/api/steer" in page.text and "cdn" not in page.text.lower()
    assert client.get("/redoc").status_code == 404 and client.get("/openapi.json").json()["paths"]
