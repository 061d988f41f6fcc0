"""``saescope explain``, ``saescope score`` and ``saescope serve-llm``: explanations of features, their scores,
and an OpenAI-compatible endpoint for a local model."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from saescope.autointerp.explain_config import ExplainConfig
from saescope.autointerp.llm.build import ClientConfig
from saescope.cli.common import (
    DEVICE_OPTION,
    DTYPE_OPTION,
    JSON_OPTION,
    config_options,
    console,
    load_model_and_sae,
    print_json,
)

RUN_ARGUMENT = typer.Argument(..., help="A features RUN folder (saescope features extract).")


@config_options(ClientConfig)
@config_options(ExplainConfig, param="explain_config")
def explain_command(
    run: Path = RUN_ARGUMENT,
    features: str = typer.Option("random:200", help="0-199 | 3,17,42 | top:kurtosis:200 | random:200 (alive features)."),
    resume: bool = typer.Option(False, "--resume", help="Skip features this explainer has already explained."),
    seed: int = typer.Option(0, help="Seed of random:N."),
    config: ClientConfig = None,
    explain_config: ExplainConfig = None,
) -> None:
    """Explain features with an LLM (or, with --explainer none, by their top tokens) into RUN/explanations.parquet.

    Example: saescope explain runs/default --features top:kurtosis:50 --explainer local
    """
    from saescope.autointerp.explain import explain_features
    from saescope.autointerp.llm.build import make_client
    from saescope.features.run import FeatureRun
    from saescope.features.selection import select_features

    loaded = FeatureRun.load(run)
    chosen = select_features(loaded, features, seed)
    client = make_client(config)
    rows = explain_features(loaded, chosen, client, explain_config, resume=resume)
    failed = int((rows.explanation.fillna("") == "").sum())
    usage = client.usage.summary() if client else {}
    console.print(f"explained {len(rows) - failed} of {len(rows)} features ({failed} failures recorded) "
                  f"in {run / 'explanations.parquet'}" + (f"; usage {usage}" if usage else ""))


@config_options(ClientConfig, param="client_config")
def score_command(
    run: Path = RUN_ARGUMENT,
    scorer: str = typer.Option("embedding", help="Comma-separated: embedding, detection, fuzzing, simulation, intervention."),
    features: str = typer.Option(None, help="Only these features (same forms as explain --features)."),
    max_contexts: int = typer.Option(10, help="LLM scorers: contexts per class per feature."),
    controls: bool = typer.Option(True, "--controls/--no-controls", help="Also score shuffled explanations."),
    seed: int = typer.Option(0),
    json_out: bool = JSON_OPTION,
    client_config: ClientConfig = None,
) -> None:
    """Score the RUN's explanations on held-out contexts (RUN/scores.parquet), with a shuffled control.

    Example: saescope score runs/default --scorer embedding,detection
    """
    from saescope.autointerp.llm.build import make_client
    from saescope.autointerp.score_run import LLM_SCORERS, check_scorers, score_explanations, summarize
    from saescope.features.run import FeatureRun
    from saescope.features.selection import select_features

    loaded = FeatureRun.load(run)
    names = check_scorers([s.strip() for s in scorer.split(",") if s.strip()])
    chosen = select_features(loaded, features, seed) if features else None
    client = make_client(client_config) if any(n in LLM_SCORERS for n in names) else None
    subject = None
    if "intervention" in names:
        lm, sae, _ = load_model_and_sae(loaded.manifest.get("sae", "default"), None, loaded.manifest["hook"],
                                        client_config.device, client_config.dtype)
        loaded.check_sae(sae)
        subject = (lm, sae)
    summary = summarize(score_explanations(loaded, names, client, chosen, max_contexts, controls, seed, subject=subject))
    if json_out:
        print_json(summary.to_dict(orient="records"))
        return
    for row in summary.itertuples():
        console.print(f"{row.scorer:9s} {row.explainer:10s} {row.control:8s} mean {row.mean:.3f} "
                      f"[{row.ci_low:.3f}, {row.ci_high:.3f}] over {row.features} features")



def serve_llm_command(
    model: str = typer.Option("default", help="'default' (the embedded model), a hub id or a local folder."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (not loopback: a token is required)."),
    port: int = typer.Option(8011),
    batch_size: int = typer.Option(8, help="Requests answered together."),
    max_prompt_tokens: int = typer.Option(2048, help="Longest prompt served, in tokens after the chat template."),
    allowed_hosts: str = typer.Option("", help="Host names answered besides loopback and --host, comma-separated "
                                      "(others get 421: DNS rebinding)."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
) -> None:
    """Serve a local chat model at /v1/chat/completions and /v1/models (OpenAI-compatible).

    The bearer token, when wanted, comes from $SAESCOPE_LLM_TOKEN. Example: saescope serve-llm --port 8011
    """
    from saescope.autointerp.llm.local import LocalChatClient
    from saescope.autointerp.llm.server import serve_llm
    from saescope.errors import SaescopeError
    from saescope.model.loading import load_model

    if not 0 < port < 65536 or batch_size <= 0 or max_prompt_tokens <= 0:
        raise SaescopeError("--port must be 1-65535, --batch-size and --max-prompt-tokens positive")
    client = LocalChatClient(load_model(model, device, dtype), batch_size)
    console.print(f"serving {client.model} at http://{host}:{port}/v1", highlight=False)
    serve_llm(client, host, port, os.environ.get("SAESCOPE_LLM_TOKEN") or None, batch_size, max_prompt_tokens,
              [h.strip() for h in allowed_hosts.split(",") if h.strip()])
