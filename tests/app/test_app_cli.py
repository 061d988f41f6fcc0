"""``saescope app`` from the command line: two worker processes on a loopback port answer pages and the API."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

from helpers import saescope


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_serves_from_two_workers(app_run):
    run, reports = app_run
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "saescope.cli.main", "app", str(run.path), "--reports",
                               str(reports), "--port", str(port), "--workers", "2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                runs = httpx.get(f"{url}/api/runs", timeout=2).json()
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stderr.read()
                time.sleep(0.5)
        assert [r["id"] for r in runs] == ["run"]
        for _ in range(6):  # new connections: both workers answer the same
            with httpx.Client(base_url=url, timeout=30) as client:
                page = client.get("/runs/run/features/3")
                assert page.status_code == 200 and "Feature 3" in page.text
                assert client.get("/runs/run/features/999999").status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bad_app_settings_are_one_line_errors(app_run, tmp_path):
    run, _ = app_run
    for args, message in [(["--workers", "-1"], "workers must be"),
                          (["--host", "0.0.0.0"], "needs a token"),
                          (["--reports", str(tmp_path / "missing")], "is not a folder")]:
        done = saescope("app", str(run.path), "--port", str(_free_port()), *args, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
