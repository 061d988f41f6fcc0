"""The app end to end in a real headless Chromium (Debian's, driven by Playwright) against a real uvicorn
server on a free loopback port: search a token, open a feature, compare steered and plain text, open a
report. Screenshots go to test-artifacts/app/."""

import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from saescope.app.config import AppConfig
from saescope.app.server import create_app
from saescope.app.state import AppState

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "app"


@pytest.fixture(scope="module")
def live(app_run):
    import uvicorn

    run, reports = app_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(AppState.from_paths([run.path], [reports]), AppConfig(max_new_tokens=16))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", run
    server.should_exit = True
    thread.join(timeout=30)


def test_search_open_steer_and_read_a_report_in_chromium(live):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (as root: apt-get install chromium)")
    url, run = live
    token = run.top_tokens[run.top_tokens["rank"] == 0].iloc[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.click("#runs a")
        page.fill("#search-query", token.token)
        page.click("#search button")
        page.wait_for_selector("#search-list li a", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "search.png"))
        from saescope.features.search import features_for_token

        best = int(features_for_token(run, token.token).feature.iloc[0])  # the strongest on that token comes first
        assert page.get_attribute("#search-list li:first-child a", "href").endswith(f"/features/{best}")
        page.click("#search-list li:first-child a")
        page.wait_for_selector("#stats")
        assert page.inner_text("h1") == f"Feature {best}" and page.locator("#neighbours li").count() == 8
        page.screenshot(path=str(ARTIFACTS / "feature.png"), full_page=True)
        page.click("#steer-link")
        assert page.input_value(".feature") == str(best)
        page.fill(".value", "60")
        page.click("#compare")
        finished = "['done'].includes(document.getElementById('status').textContent) || " \
                   "document.getElementById('status').textContent.startsWith('error')"
        page.wait_for_function(finished, timeout=120_000)
        assert page.inner_text("#status") == "done", page.inner_text("#status")
        plain, steered = page.inner_text("#plain"), page.inner_text("#steered")
        assert plain.strip() and steered.strip() and plain != steered
        page.screenshot(path=str(ARTIFACTS / "steer.png"), full_page=True)
        page.goto(url)
        page.click("#reports a")
        assert page.inner_text("#bias") == "Bias report"
        browser.close()


def _browser(p):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (as root: apt-get install chromium)")
    return p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])


def test_the_pages_resist_injection_check_the_form_and_filter_fast(live):
    """A feature id from the URL is never HTML; Sweep checks the form as Compare does; the feature filter of
    thousands of rows answers a keystroke in well under a second (it froze for minutes reading innerText per row)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    url, run = live
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        evil = '1"><img src=x onerror="window.PWNED=1">'
        page.goto(f"{url}/steer?run=run&feature={quote(evil)}")
        assert page.input_value(".feature") == "" and page.locator("img").count() == 0
        assert page.evaluate("window.PWNED") is None
        requests.clear()
        page.click("#sweep")  # the feature box is empty: nothing is steered (it used to steer feature 0)
        page.wait_for_timeout(300)
        assert not [r for r in requests if "/api/steer" in r] and page.inner_text("#status") == ""
        page.goto(f"{url}/runs/run")
        n_rows = page.locator("#features tbody tr").count()
        assert n_rows > 1000
        words = [t.strip().lower() for t in run.top_tokens[run.top_tokens["rank"] == 0].token if t.strip().isalpha()]
        token = words[0]
        started = time.monotonic()
        page.fill("#filter", token)
        page.wait_for_function("[...document.querySelectorAll('#features tbody tr')].some(r => r.style.display === 'none')")
        elapsed = time.monotonic() - started
        shown = page.evaluate("[...document.querySelectorAll('#features tbody tr')].filter(r => r.style.display !== 'none')"
                              ".map(r => r.cells[8].textContent.toLowerCase() + ' ' + r.cells[9].textContent.toLowerCase())")
        assert shown and all(token in text for text in shown) and elapsed < 5, elapsed
        page.fill("#filter", "")
        page.wait_for_function(f"[...document.querySelectorAll('#features tbody tr')].filter(r => r.style.display !== 'none')"
                               f".length === {n_rows}")
        page.goto(f"{url}/docs")
        assert "/api/steer" in page.inner_text("#endpoints")
        browser.close()


def test_a_shared_steering_link_fills_the_form_and_the_share_button_writes_it(live):
    from urllib.parse import parse_qs, urlparse

    from helpers import chromium_browser

    url, run = live
    expected = run.explanation_labels([5])[0]
    assert expected  # the baseline explained features 0-63
    shared = (f"{url}/steer?run=run&prompt={quote('Tell me about <b>cats</b>')}&chat=1&seed=3&temperature=0.5"
              "&e=5:add:40&e=7:ablate:0&e=x:add:1")
    with chromium_browser() as browser:
        page = browser.new_page()
        page.goto(shared)
        assert page.input_value("#prompt") == "Tell me about <b>cats</b>" and page.is_checked("#chat")
        assert page.input_value("#seed") == "3" and page.input_value("#temperature") == "0.5"
        features = page.locator("#edits .feature")
        assert features.count() == 3 and [features.nth(i).input_value() for i in range(3)] == ["5", "7", ""]
        assert page.locator("#edits .op").nth(1).input_value() == "ablate"
        explained = page.locator("#edits .explain").nth(0)  # the feature's explanation beside its id
        explained.wait_for()
        page.wait_for_function("document.querySelector('#edits .explain').textContent.length > 0")
        assert explained.inner_text() == expected
        page.locator("#edits .feature").nth(2).fill("9")
        page.click("#share")
        query = parse_qs(urlparse(page.input_value("#share-url")).query)
        assert query["e"] == ["5:add:40", "7:ablate:0", "9:add:1"] and query["chat"] == ["1"]
        assert query["prompt"] == ["Tell me about <b>cats</b>"] and query["run"] == ["run"]
