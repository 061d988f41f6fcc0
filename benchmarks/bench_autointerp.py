"""Auto-interpretation of the bundled SAE: how good the explanations are, and how fast they come.

1. A features RUN of the bundled SAE over ``--tokens`` training tokens (or ``--run``), ``--features`` alive
   features chosen at random (seed 0), their contexts sampled over ``--sample-tokens`` held-out tokens.
2. Explanations by the embedded model (the best explainer this machine runs) and by the top-token baseline.
3. ``autointerp_embedding``: the embedding scorer's mean AUC over features on score-split contexts for the
   LLM explanations, the baseline, and the LLM explanations shuffled across features (the control).
4. ``autointerp_detection`` / ``autointerp_fuzzing``: the same with the embedded model as the scorer, on the
   first ``--llm-score-features`` features, 3 + 3 contexts each (balanced accuracy; ~0.3 s per context here).
5. ``autointerp_speed``: explanations per minute with the local client and through ``saescope serve-llm``
   on a loopback port (same model, same ``--speed-features`` features, fresh caches, 8 concurrent
   requests), and how much faster a re-run of step 2 is with the answer cache.

Nothing here is tuned on the reported features: the prompt, the context sizes and the embedding window were
chosen on 40 other alive features of the same RUN (``random:400`` with seed 1, minus these).
Usage: ``python benchmarks/bench_autointerp.py`` (about 9 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from saescope.autointerp.explain import ExplainConfig, explain_features
from saescope.autointerp.llm.cache import CachedClient
from saescope.autointerp.llm.http import OpenAIChatClient
from saescope.autointerp.llm.local import LocalChatClient
from saescope.autointerp.score_run import score_explanations, summarize
from saescope.features.extract import extract_features
from saescope.features.run import FeatureRun
from saescope.features.samples import SampleConfig, sample_contexts
from saescope.features.selection import select_features
from saescope.model.loading import load_model
from saescope.sae.formats import load_sae

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, machine, parse_args, start_saescope_server


def explain_timed(run: FeatureRun, features: list[int], client, config: ExplainConfig) -> float:
    started = time.perf_counter()
    explain_features(run, features, client, config, progress=False)
    return time.perf_counter() - started


def mean_of(summary, scorer: str, explainer: str, control: str = "none") -> float:
    row = summary[(summary.scorer == scorer) & (summary.explainer == explainer) & (summary.control == control)]
    return float(row["mean"].iloc[0]) if len(row) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=25_000, help="RUN tokens (ignored with --run)")
    parser.add_argument("--sample-tokens", type=int, default=30_000)
    parser.add_argument("--llm-score-features", type=int, default=8)
    parser.add_argument("--speed-features", type=int, default=8)
    parser.add_argument("--run", type=Path, help="an existing RUN of the bundled SAE (a copy is used)")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, {"features": 2, "tokens": 512, "sample_tokens": 512, "llm_score_features": 1,
                               "speed_features": 1})
    lm, sae = load_model(), load_sae("default")
    folder = Path(tempfile.mkdtemp(prefix="bench-autointerp-"))
    if args.run:
        import shutil

        shutil.copytree(args.run, folder / "run")
        run = FeatureRun.load(folder / "run")
    else:
        run = extract_features(lm, sae, folder / "run", tokens=args.tokens, progress=False)
    features = select_features(run, f"random:{args.features}", args.seed)
    sample_contexts(lm, sae, run, features, SampleConfig(tokens=args.sample_tokens), progress=False)
    config = ExplainConfig()
    explain_features(run, features, None, config, progress=False)
    local = CachedClient(LocalChatClient(lm), folder / "cache.sqlite")
    first_s = explain_timed(run, features, local, config)
    cached_s = explain_timed(run, features, CachedClient(LocalChatClient(lm), folder / "cache.sqlite"), config)
    summary = summarize(score_explanations(run, ["embedding"], None, progress=False))
    print(f"autointerp_embedding features={len(features)} llm_auc={mean_of(summary, 'embedding', 'llm'):.3f} "
          f"baseline_auc={mean_of(summary, 'embedding', 'top_tokens'):.3f} "
          f"shuffled_auc={mean_of(summary, 'embedding', 'llm', 'shuffled'):.3f} "
          f"baseline_shuffled_auc={mean_of(summary, 'embedding', 'top_tokens', 'shuffled'):.3f} {machine(lm.dtype)}", flush=True)
    subset = features[:args.llm_score_features]
    for scorer in ("detection", "fuzzing"):
        scored = summarize(score_explanations(run, [scorer], local, subset, max_contexts=3, controls=False, progress=False))
        print(f"autointerp_{scorer} features={len(subset)} llm_bal_acc={mean_of(scored, scorer, 'llm'):.3f} "
              f"baseline_bal_acc={mean_of(scored, scorer, 'top_tokens'):.3f} scorer={lm.name} {machine(lm.dtype)}", flush=True)
    speed = features[:args.speed_features]
    local_s = explain_timed(run, speed, CachedClient(LocalChatClient(lm), folder / "speed-local.sqlite"), config)
    port = free_port()
    server = start_saescope_server(["serve-llm", "--port", str(port)], f"http://127.0.0.1:{port}/v1/models")
    try:
        http = CachedClient(OpenAIChatClient(f"http://127.0.0.1:{port}/v1", lm.name), folder / "speed-http.sqlite")
        http_s = explain_timed(run, speed, http, config)
    finally:
        server.terminate()
    local_rate, http_rate = 60 * len(speed) / local_s, 60 * len(speed) / http_s
    print(f"autointerp_speed local_per_min={local_rate:.1f} http_per_min={http_rate:.1f} ratio={http_rate / local_rate:.2f} "
          f"cache_speedup={first_s / cached_s:.0f} first_run_per_min={60 * len(features) / first_s:.1f} "
          f"{machine(lm.dtype)}", flush=True)


if __name__ == "__main__":
    main()
