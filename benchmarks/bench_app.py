"""A bounded load test of ``saescope app`` on loopback: feature pages, token search, steering, the 503 path.

The app runs in its own process (``saescope app RUN --port P``) over a RUN of the bundled SAE (4,608
features, ``--tokens`` tokens). ``--users`` threads with keep-alive HTTP clients request random alive
features' HTML pages and token searches for ``--seconds``; then one 32-token steering comparison (plain +
steered, same seed) is timed against the same two ``generate`` calls in this process (the CLI's path);
then ``--users`` steering requests at once against a queue of 4 must get some 503s with Retry-After.

Usage: ``python benchmarks/bench_app.py`` (about 2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from saescope.features.extract import extract_features
from saescope.model.generation import generate
from saescope.model.loading import load_model
from saescope.sae.formats import load_sae
from saescope.steering.features import FeatureEdit, FeatureSteering

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, machine, parse_args, start_saescope_server

STEER = {"run": "run", "prompt": "The nurse said that", "max_new_tokens": 32, "temperature": 0.0, "seed": 0}


def load(url: str, users: int, seconds: float, features: list[int], tokens: list[str]) -> dict[str, list]:
    """``users`` threads alternate feature pages and token searches until ``seconds`` pass."""
    out: dict[str, list] = {"feature": [], "search": [], "errors": []}
    stop = time.monotonic() + seconds

    def user(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < stop:
                for kind, path, params in (("feature", f"/runs/run/features/{rng.choice(features)}", None),
                                           ("search", "/api/runs/run/search", {"token": rng.choice(tokens)})):
                    started = time.perf_counter()
                    answer = client.get(path, params=params)
                    out[kind].append(1000 * (time.perf_counter() - started))
                    if answer.status_code >= 500 or (kind == "feature" and answer.status_code != 200):
                        out["errors"].append(answer.status_code)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def steering_ratio(url: str, lm, sae, feature: int) -> float:
    body = {**STEER, "edits": [{"feature": feature, "op": "add", "value": 40.0}]}
    httpx.post(f"{url}/api/steer", json={**body, "max_new_tokens": 2}, timeout=300)  # loads the app's model and SAE
    answer = httpx.post(f"{url}/api/steer", json=body, timeout=300).json()
    steer = FeatureSteering(sae, [FeatureEdit(feature, "add", 40.0)])
    started = time.perf_counter()
    plain = generate(lm, [STEER["prompt"]], None, max_new_tokens=32, temperature=0)[0][0]
    steered = generate(lm, [STEER["prompt"]], steer, max_new_tokens=32, temperature=0)[0][0]
    cli_tok_s = len(lm.tokenizer.encode(plain + steered, add_special_tokens=False)) / (time.perf_counter() - started)
    return answer["tokens_per_s"] / cli_tok_s


def busy_answers(url: str, users: int, feature: int) -> tuple[int, int]:
    """(503 answers with Retry-After, other errors) when ``users`` steering requests arrive at once."""
    body = {**STEER, "max_new_tokens": 8, "edits": [{"feature": feature, "op": "add", "value": 40.0}]}
    with ThreadPoolExecutor(users) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{url}/api/steer", json=body, timeout=300), range(users)))
    busy = sum(a.status_code == 503 and a.headers.get("retry-after") is not None for a in answers)
    return busy, sum(a.status_code not in (200, 503) for a in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=20_000)
    args = parse_args(parser, {"users": 2, "seconds": 1.0, "tokens": 512})
    lm, sae = load_model(), load_sae("default")
    folder = Path(tempfile.mkdtemp(prefix="bench-app-"))
    run = extract_features(lm, sae, folder / "run", tokens=args.tokens, progress=False)
    alive = run.stats.feature[run.stats["count"] > 0].tolist()
    tokens = run.top_tokens[run.top_tokens["rank"] == 0].token.tolist()
    port = free_port()
    server = start_saescope_server(["app", str(run.path), "--port", str(port), "--queue-size", "4"],
                                   f"http://127.0.0.1:{port}/api/runs")
    url = f"http://127.0.0.1:{port}"
    try:
        feature = int(run.stats.sort_values("count").feature.iloc[-1])
        ratio = steering_ratio(url, lm, sae, feature)
        httpx.get(f"{url}/runs/run/features/{alive[0]}", timeout=60)
        timings = load(url, args.users, args.seconds, alive, tokens)
        busy, busy_errors = busy_answers(url, args.users, feature)
    finally:
        server.terminate()
    p50, p95 = np.percentile(timings["feature"], [50, 95])
    print(f"app_load users={args.users} feature_p50_ms={p50:.1f} feature_p95_ms={p95:.1f} "
          f"search_p95_ms={np.percentile(timings['search'], 95):.1f} steer_tok_s_ratio={ratio:.2f} "
          f"errors={len(timings['errors']) + busy_errors} busy_503={busy} "
          f"requests={len(timings['feature']) + len(timings['search'])} "
          f"features={run.d_sae} {machine(lm.dtype)}", flush=True)


if __name__ == "__main__":
    main()
