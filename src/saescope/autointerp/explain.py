"""Explanations of features from a RUN, written to ``RUN/explanations.parquet`` (``saescope explain``).

Two explainers:
- ``llm``: any ``LLMClient`` reads the feature's marked contexts (``examples.explainer_contexts``) and the
  tokens it promotes, and answers with a short explanation; an answer with no explanation in it is
  recorded as a failure (``explanation`` empty, ``error`` says why) and never replaced by a made-up one;
- ``top_tokens``: no LLM, the words the feature fires on most often, ``"she, her, hers"`` (a plain list: on
  tuning features a ``"fires on: "`` prefix lowered the embedding score by 0.02).

The table keeps one row per (feature, explainer, model); a new run replaces its own rows only. Work goes
in chunks of ``chunk`` features; after each chunk the table is rewritten atomically, so Ctrl-C loses at
most one chunk and ``resume=True`` skips the features already explained. Settings, the prompt version and
token usage go to ``RUN/explanations.json``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from saescope.autointerp.examples import clean, explainer_contexts, promoted_tokens, top_token_words
from saescope.autointerp.explain_config import ExplainConfig
from saescope.autointerp.llm.protocol import LLMClient, LLMError, Usage
from saescope.autointerp.prompts import PROMPT_VERSION, explain_request, parse_explanation
from saescope.errors import JobInterrupted
from saescope.features.run import FeatureRun, write_parquet
from saescope.features.samples import SPLITS
from saescope.interrupts import deferred_interrupt
from saescope.storage import RESUME_HINT, read_json, write_json

COLUMNS = ["feature", "explainer", "model", "explanation", "error", "raw", "prompt_version"]
BASELINE = "top_tokens"


def read_explanations(run: FeatureRun) -> pd.DataFrame:
    """``RUN/explanations.parquet`` (an empty table when there is none)."""
    table = run.optional_table("explanations.parquet")
    return pd.DataFrame(columns=COLUMNS) if table is None else table


def baseline_explanation(run: FeatureRun, samples: pd.DataFrame | None, feature: int, n: int = 8) -> str:
    """The ``n`` words the feature fires on most often in the explainer's contexts (top-K and explain-split
    samples), as a plain list ``"she, her, hers"``, falling back to the RUN's top tokens."""
    contexts = explainer_contexts(run, samples, feature, top=10**6, per_quantile=10**6)
    counts = Counter(word for c in contexts if (word := clean(c.tokens[c.center]).lower()))
    words = [w for w, _ in counts.most_common(n)] or top_token_words(run, feature, n)
    return ", ".join(words)


def explain_features(run: FeatureRun, features: list[int], client: LLMClient | None = None,
                     config: ExplainConfig | None = None, resume: bool = False, progress: bool = True) -> pd.DataFrame:
    """Explain ``features`` with ``client`` (``None``: the top-token baseline); returns this run's rows.

    Example::

        rows = explain_features(run, [3, 17], CachedClient(LocalChatClient(lm)))
        rows[["feature", "explanation"]]
    """
    config = config or ExplainConfig()
    features = [run.check_feature(f) for f in features]
    explainer, model = ("llm", client.model) if client is not None else (BASELINE, "")
    existing = read_explanations(run)
    mine = (existing.explainer == explainer) & (existing.model == model)
    done = set(existing[mine].feature) if resume else set()
    todo = [f for f in features if f not in done]
    samples = _optional_samples(run)
    usage = getattr(client, "usage", None) or Usage()
    rows, started = [], time.perf_counter()
    bar = tqdm(total=len(features), initial=len(features) - len(todo), disable=not progress, desc=f"explain ({explainer})",
               unit="feature")
    with deferred_interrupt() as interrupted:
        for start in range(0, len(todo), config.chunk):
            if interrupted():
                _save(run, existing, rows, explainer, model)
                raise JobInterrupted(f"interrupted: {len(rows)} new explanations saved in {run.path}; "
                                     f"continue with --resume ({RESUME_HINT})")
            chunk = todo[start:start + config.chunk]
            rows += _explain_chunk(run, samples, chunk, client, config, explainer, model)
            _save(run, existing, rows, explainer, model)
            bar.update(len(chunk))
    bar.close()
    _save(run, existing, rows, explainer, model)
    _write_manifest(run, explainer, model, config, usage, time.perf_counter() - started, len(rows))
    table = read_explanations(run)
    keep = (table.explainer == explainer) & (table.model == model) & table.feature.isin(features)
    return table[keep].reset_index(drop=True)


def _explain_chunk(run: FeatureRun, samples: pd.DataFrame | None, chunk: list[int], client: LLMClient | None,
                   config: ExplainConfig, explainer: str, model: str) -> list[dict]:
    if client is None:
        texts = [baseline_explanation(run, samples, f) for f in chunk]
        return [_row(f, explainer, model, t, "" if t else "the feature has no top tokens", t) for f, t in zip(chunk, texts)]
    requests = [explain_request(explainer_contexts(run, samples, f, config.top, config.per_quantile, config.left, config.right),
                                promoted_tokens(run, f), config.max_tokens) for f in chunk]
    rows = []
    for feature, answer in zip(chunk, client.complete_many(requests)):
        if isinstance(answer, LLMError):
            rows.append(_row(feature, explainer, model, "", str(answer), ""))
            continue
        try:
            rows.append(_row(feature, explainer, model, parse_explanation(answer.text), "", answer.text))
        except ValueError as exc:
            rows.append(_row(feature, explainer, model, "", str(exc), answer.text))
    return rows


def _row(feature: int, explainer: str, model: str, explanation: str, error: str, raw: str) -> dict:
    return {"feature": feature, "explainer": explainer, "model": model, "explanation": explanation, "error": error,
            "raw": raw, "prompt_version": PROMPT_VERSION}


def _save(run: FeatureRun, existing: pd.DataFrame, rows: list[dict], explainer: str, model: str) -> None:
    if not rows:
        return
    new = pd.DataFrame(rows, columns=COLUMNS)
    stale = (existing.explainer == explainer) & (existing.model == model) & existing.feature.isin(new.feature)
    table = pd.concat([existing[~stale], new], ignore_index=True) if len(existing) else new
    write_parquet(Path(run.path) / "explanations.parquet", table.sort_values(["feature", "explainer"], ignore_index=True))


def _write_manifest(run: FeatureRun, explainer: str, model: str, config: ExplainConfig, usage: Usage,
                    seconds: float, n: int) -> None:
    path = Path(run.path) / "explanations.json"
    manifest = read_json(path, "explanations manifest") if path.is_file() else {}
    manifest[f"{explainer}:{model}" if model else explainer] = {
        "explainer": explainer, "model": model, "prompt_version": PROMPT_VERSION, "settings": asdict(config),
        "usage": usage.summary(), "seconds": round(seconds, 1), "explained": n}
    write_json(path, manifest)


def _optional_samples(run: FeatureRun) -> pd.DataFrame | None:
    samples = run.optional_table("samples.parquet")
    return None if samples is None else samples[samples.split == SPLITS[0]]
