"""End to end through real processes: `saescope serve-llm` on a free loopback port, the OpenAI client against it,
and the explain -> score -> show -> search loop from the command line."""

import json
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
from markupsafe import escape

from helpers import saescope
from saescope.autointerp.llm.http import OpenAIChatClient
from saescope.autointerp.llm.local import LocalChatClient
from saescope.autointerp.llm.protocol import ChatRequest
from saescope.errors import SaescopeError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "saescope.cli.main", "serve-llm", "--port", str(port),
                                "--dtype", "float32"],  # compared with the float32 `lm` fixture
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            models = httpx.get(f"{url}/models", timeout=2).json()
            break
        except httpx.HTTPError:
            if process.poll() is not None:
                pytest.fail("serve-llm exited: " + process.stderr.read())
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("serve-llm did not start in 120 s")
    yield url, models["data"][0]["id"]
    process.terminate()
    process.wait(timeout=30)


def test_the_http_client_gets_what_the_local_client_gets(lm, server):
    url, name = server
    client = OpenAIChatClient(url, name, concurrency=3)
    client.check()
    requests = [ChatRequest((("user", f"Name a {thing}."),), max_tokens=5) for thing in ("colour", "fruit", "city")]
    requests.append(ChatRequest((("user", "Is ice cold? Answer Yes or No."),), max_tokens=1, top_logprobs=5))
    remote = client.complete_many(requests)
    local = LocalChatClient(lm).complete_many(requests)
    assert [r.text for r in remote] == [r.text for r in local]
    assert remote[3].top_logprobs.keys() == local[3].top_logprobs.keys()
    assert all(abs(remote[3].top_logprobs[k] - v) < 1e-3 for k, v in local[3].top_logprobs.items())
    assert remote[0].completion_tokens == local[0].completion_tokens > 0


def test_the_server_refuses_bad_requests_with_openai_errors(server):
    url, name = server
    bad = [{"model": "other", "messages": [{"role": "user", "content": "hi"}]},
           {"model": name, "messages": []},
           {"model": name, "messages": [{"role": "user", "content": "hi"}], "n": 2},
           {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9},
           {"model": name, "messages": [{"role": "user", "content": "x" * 70_000}]}]
    many = [{"role": "user", "content": ""}] * 1600  # was 8,025 prompt tokens and 50 s of both cores
    long = [{"role": "user", "content": "word " * 3000}]  # under the character bound, over the token bound
    bad += [{"model": name, "messages": many}, {"model": name, "messages": long}]
    for body in bad:
        answer = httpx.post(f"{url}/chat/completions", json=body, timeout=30)
        assert answer.status_code in (400, 404) and "message" in answer.json()["error"], body
    assert "tokens" in httpx.post(f"{url}/chat/completions", json=bad[-1], timeout=30).json()["error"]["message"]
    huge = httpx.post(f"{url}/chat/completions", content=b"x" * (1 << 20), headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]["message"]
    broken = httpx.post(f"{url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400
    with pytest.raises(SaescopeError, match="does not serve 'nope'"):
        OpenAIChatClient(url, "nope").check()


def test_only_loopback_host_names_are_served(server):
    """DNS rebinding: a page on another site reaches 127.0.0.1 through its own name, which the browser sends as Host."""
    url, _ = server
    port = url.split(":")[2].split("/")[0]
    for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", "10.0.0.1"):
        answer = httpx.get(f"{url}/models", headers={"host": host}, timeout=10)
        assert answer.status_code == 421 and "not served here" in answer.json()["error"]["message"], host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        assert httpx.get(f"{url}/models", headers={"host": host}, timeout=10).status_code == 200, host


def test_an_unreachable_server_and_a_missing_key_are_one_line_errors(monkeypatch):
    with pytest.raises(SaescopeError, match="cannot reach"):
        OpenAIChatClient(f"http://127.0.0.1:{free_port()}/v1", "m", retries=0, timeout=5).check()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SaescopeError, match="OPENAI_API_KEY"):
        OpenAIChatClient("https://example.invalid/v1", "m")


@pytest.mark.slow  # ~2 min: the whole explain -> score -> show -> search loop by CLI; the API tests cover each step
def test_explain_score_show_search_from_the_command_line(run, server, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run.path, folder)
    cache = str(tmp_path / "llm.sqlite")
    url, name = server
    base = saescope("explain", str(folder), "--features", "0-11", "--explainer", "none")
    assert base.returncode == 0, base.stderr
    llm = saescope("explain", str(folder), "--features", "0-3", "--explainer", "openai", "--base-url", url,
                   "--explainer-model", name, "--cache", cache, "--max-tokens", "24")
    assert llm.returncode == 0, llm.stderr
    table = pd.read_parquet(folder / "explanations.parquet")
    assert len(table[table.explainer == "top_tokens"]) == 12 and len(table[table.explainer == "llm"]) == 4
    assert ((table.explanation.str.len() > 0) | (table.error.str.len() > 0)).all()  # an answer or a recorded failure
    baseline = table[table.explainer == "top_tokens"].explanation
    assert (baseline.str.split(", ").str.len().between(1, 8)).all()
    scored = saescope("score", str(folder), "--scorer", "embedding,detection", "--features", "0-3", "--max-contexts", "3",
                      "--explainer", "openai", "--base-url", url, "--explainer-model", name, "--cache", cache, "--json")
    assert scored.returncode == 0, scored.stderr
    summary = {(r["scorer"], r["explainer"], r["control"]): r for r in json.loads(scored.stdout)}
    assert {k[0] for k in summary} == {"embedding", "detection"} and {k[2] for k in summary} == {"none", "shuffled"}
    scores = pd.read_parquet(folder / "scores.parquet")
    assert scores.score.dropna().between(0, 1).all() and len(scores[scores.scorer == "detection"]) == 4 * 2 * 2
    shown = json.loads(saescope("features", "show", str(folder), "1", "--json").stdout)
    assert {e["explainer"] for e in shown["explanations"]} == {"llm", "top_tokens"}
    assert "embedding" in next(e for e in shown["explanations"] if e["explainer"] == "top_tokens")["scores"]
    scored_words = table[(table.feature == 1) & (table.explainer == "top_tokens")].explanation.iloc[0]
    assert saescope("features", "dashboard", str(folder), "--out", str(tmp_path / "dash"), "--features", "1").returncode == 0
    page = (tmp_path / "dash" / "feature_1.html").read_text()
    assert 'data-scorer="embedding"' in page and str(escape(scored_words)) in page
    llm_words = table[(table.feature == 1) & (table.explainer == "llm")].explanation.iloc[0]
    shown_first = llm_words or scored_words  # the index shows an LLM's explanation when it did not fail
    assert str(escape(shown_first)) in (tmp_path / "dash" / "index.html").read_text()
    words = table[(table.feature == 5) & (table.explainer == "top_tokens")].explanation.iloc[0]
    found = json.loads(saescope("features", "search", str(folder), "--explanation", words, "--json").stdout)
    assert found[0]["feature"] == 5 and found[0]["similarity"] > 0.99
    again = saescope("explain", str(folder), "--features", "0-3", "--explainer", "openai", "--base-url", url,
                     "--explainer-model", name, "--cache", cache, "--max-tokens", "24")
    assert "'cached': 4" in again.stdout  # a re-run costs nothing


@pytest.mark.parametrize(("args", "message"), [
    (["score", "{run}", "--scorer", "embedding"], "saescope features sample"),
    (["score", "{run}", "--scorer", "telepathy"], "unknown scorer"),
    (["explain", "{run}", "--features", "4000", "--explainer", "none"], "out of range"),
    (["explain", "{run}", "--features", "top:nonsense:5", "--explainer", "none"], "unknown column"),
    (["explain", "{run}", "--features", "0-999999999", "--explainer", "none"], "out of range"),  # not expanded first
    (["features", "sample", "{run}", "--features", "0-999999999"], "out of range"),
    (["explain", "{run}", "--features", "5-3", "--explainer", "none"], "is empty"),
    (["explain", "{run}", "--features", "0-1", "--explainer", "local", "--cache", "{run}"], "is a folder"),
    (["explain", "{run}", "--features", "0-1", "--explainer", "local", "--cache", "{run}/manifest.json"],
     "not a usable SQLite file"),
    (["explain", "{run}", "--features", "0-1", "--explainer", "openai", "--explainer-model", "m",
      "--base-url", "http://127.0.0.1:9/v1", "--timeout", "2"], "cannot reach"),
])
def test_bad_inputs_are_one_line_errors(run, tmp_path, args, message):
    folder = tmp_path / "run"
    shutil.copytree(run.path, folder)
    (folder / "samples.parquet").unlink()
    (folder / "explanations.parquet").unlink(missing_ok=True)
    if args[0] == "score":
        saescope("explain", str(folder), "--features", "0-1", "--explainer", "none")
    result = saescope(*[a.format(run=folder) for a in args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
