"""SAEBench's ``autointerp`` eval through saescope's own explain / score pipeline.

For ``n_latents`` alive latents chosen at random (seed 0) of a feature RUN made here over ``tokens``
training tokens, contexts are sampled per quantile over ``sample_tokens`` held-out tokens (top,
quantile-spread and random non-activating contexts: SAEBench samples top + importance-weighted +
random), each latent is explained by the LLM client from its top contexts, and the explanation is
scored by **detection** (the client says, for each of ``max_contexts`` activating and as many
non-activating contexts, whether the explanation applies): SAEBench's score definition, the share of
contexts classified right, averaged over latents (``autointerp_score``, with ``autointerp_std_dev``).

The client is the embedded chat model by default (``LocalChatClient``) or any OpenAI-compatible
endpoint (``OpenAIChatClient``), answers cached on disk. A 135M explainer is weak: compare SAEs
scored by the same client only. This lives in the autointerp package, above the SAE layer, and is
handed to ``sae.bench.run.bench_sae`` as an extra eval (``EXTRA = {"autointerp": autointerp_eval}``).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE


def autointerp_eval(lm: LoadedModel, sae: SAE, n_latents: int = 20, tokens: int = 20_000,
                    sample_tokens: int = 20_000, max_contexts: int = 5, client: Any = None,
                    progress: bool = False) -> tuple[dict, list, dict, dict]:
    """``(metrics, details, unstructured, eval_config)`` of the autointerp eval."""
    from saescope.autointerp.explain import ExplainConfig, explain_features
    from saescope.autointerp.llm.local import LocalChatClient
    from saescope.autointerp.score_run import score_explanations
    from saescope.features.extract import extract_features
    from saescope.features.samples import SampleConfig, sample_contexts
    from saescope.features.selection import select_features

    client = client or LocalChatClient(lm)
    with tempfile.TemporaryDirectory(prefix="saescope-autointerp-") as folder:
        run = extract_features(lm, sae, Path(folder) / "run", tokens=tokens, progress=progress)
        latents = select_features(run, f"random:{n_latents}", 0)
        sample_contexts(lm, sae, run, latents, SampleConfig(tokens=sample_tokens), progress=progress)
        explain_features(run, latents, client, ExplainConfig(), progress=progress)
        rows = score_explanations(run, ["detection"], client, latents, max_contexts=max_contexts, controls=False,
                                  progress=progress)
    rows = rows[rows.explainer == "llm"]
    scores = [float(s) for s in rows.score.dropna()]
    details = [{"latent": int(r.feature), "score": float(r.score), "n_positive": int(r.n_pos),
                "n_negative": int(r.n_neg)} for r in rows.itertuples()]
    metrics = {"autointerp": {"autointerp_score": statistics.fmean(scores) if scores else float("nan"),
                              "autointerp_std_dev": statistics.stdev(scores) if len(scores) > 1 else float("nan")}}
    config = {"n_latents": n_latents, "total_tokens": tokens, "sample_tokens": sample_tokens,
              "max_contexts": max_contexts, "scoring": "detection", "llm": getattr(client, "model", "")}
    unstructured = {"explainer_and_scorer": getattr(client, "model", ""), "latents": latents,
                    "note": "compare SAEs scored by the same client only"}
    return metrics, details, unstructured, config


EXTRA = {"autointerp": autointerp_eval}
