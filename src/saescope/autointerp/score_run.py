"""Score a RUN's explanations (``saescope score``): ``RUN/scores.parquet`` and ``RUN/scores.json``.

Every explanation is scored beside a control: the same explanations shuffled across the scored features
(each feature gets another feature's explanation), which must score near chance. ``summarize`` gives each
(explainer, control, scorer) the mean over features with a 95 % bootstrap confidence interval
(``scipy.stats.bootstrap``, resampling features). Scoring goes in chunks of features; after each chunk
the table is rewritten atomically (rows of the same explainer/control/scorer/scorer model are replaced).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from saescope.autointerp.explain import read_explanations
from saescope.autointerp.llm.protocol import LLMClient, Usage
from saescope.autointerp.scorers import detection_scores, embedding_scores, fuzzing_scores, simulation_scores
from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun, write_parquet
from saescope.features.samples import load_samples
from saescope.storage import read_json, write_json

SCORERS = ("embedding", "detection", "fuzzing", "simulation", "intervention")
LLM_SCORERS = ("detection", "fuzzing", "simulation", "intervention")
KEY = ["explainer", "explainer_model", "control", "scorer", "scorer_model"]


def shuffled(explanations: dict[int, str], seed: int = 0) -> dict[int, str]:
    """Each feature gets another feature's explanation (a random cyclic shift: nobody keeps their own)."""
    order = list(explanations)
    random.Random(seed).shuffle(order)
    return {order[i]: explanations[order[(i + 1) % len(order)]] for i in range(len(order))}


def check_scorers(names: list[str]) -> list[str]:
    """``names`` if every one is a scorer, else a one-line error."""
    unknown = [n for n in names if n not in SCORERS]
    if unknown or not names:
        raise SaescopeError(f"unknown scorer {', '.join(unknown) or '(none)'}: use {', '.join(SCORERS)}")
    return names


def score_explanations(run: FeatureRun, scorers: list[str], client: LLMClient | None = None,
                       features: list[int] | None = None, max_contexts: int = 10, controls: bool = True,
                       seed: int = 0, chunk: int = 32, progress: bool = True, subject: tuple | None = None) -> pd.DataFrame:
    """Score every explanation in the RUN (of ``features``, default all) with ``scorers``; returns the new rows.
    The intervention scorer also needs ``subject = (lm, sae)``, the model and SAE the RUN was made with.

    Example::

        rows = score_explanations(run, ["embedding"])
        summarize(rows)
    """
    scorers = check_scorers(scorers)
    if client is None and any(n in LLM_SCORERS for n in scorers):
        raise SaescopeError(f"the {', '.join(n for n in scorers if n in LLM_SCORERS)} scorer needs an LLM client")
    if "intervention" in scorers and subject is None:
        raise SaescopeError("the intervention scorer needs the RUN's model and SAE (subject=(lm, sae))")
    samples = load_samples(run)
    table = read_explanations(run)
    table = table[table.explanation.fillna("").str.len() > 0]
    if features is not None:
        table = table[table.feature.isin([run.check_feature(f) for f in features])]
    if table.empty:
        raise SaescopeError(f"{run.path} has no explanations to score: run `saescope explain {run.path}` first")
    started, rows = time.perf_counter(), []
    for (explainer, model), group in table.groupby(["explainer", "model"]):
        given = dict(zip(group.feature.astype(int), group.explanation))
        variants = {"none": given, **({"shuffled": shuffled(given, seed)} if controls and len(given) > 1 else {})}
        for control, explanations in variants.items():
            for scorer in scorers:
                for part in _chunks(explanations, chunk if scorer in LLM_SCORERS else len(explanations), progress,
                                    f"{scorer} ({explainer}, {control})"):
                    new = _score(scorer, samples, part, client, max_contexts, seed, run, subject)
                    scorer_model = client.model if scorer in LLM_SCORERS and client is not None else ""
                    rows += [{**r, "explainer": explainer, "explainer_model": model, "control": control,
                              "scorer": scorer, "scorer_model": scorer_model} for r in new]
                    _save(run, rows)
    _write_manifest(run, rows, getattr(client, "usage", None), time.perf_counter() - started, max_contexts, seed)
    return pd.DataFrame(rows)


def _score(scorer: str, samples: pd.DataFrame, explanations: dict[int, str], client: LLMClient | None,
           max_contexts: int, seed: int, run: FeatureRun, subject: tuple | None) -> list[dict]:
    if scorer == "embedding":
        return embedding_scores(samples, explanations)
    if scorer == "intervention":
        from saescope.autointerp.intervention import intervention_scores

        return intervention_scores(*subject, run, explanations, client, seed=seed)
    score = {"detection": detection_scores, "fuzzing": fuzzing_scores, "simulation": simulation_scores}[scorer]
    return score(samples, explanations, client, max_contexts, seed)


def _chunks(explanations: dict[int, str], size: int, progress: bool, desc: str):
    items = list(explanations.items())
    for start in tqdm(range(0, len(items), max(size, 1)), disable=not progress, desc=desc):
        yield dict(items[start:start + size])


def read_scores(run: FeatureRun) -> pd.DataFrame:
    """``RUN/scores.parquet`` (an empty table when there is none)."""
    table = run.optional_table("scores.parquet")
    if table is None:
        return pd.DataFrame(columns=["feature", "score", "score_low", "score_high", "auc", "n_pos", "n_neg", "failed",
                                     *KEY])
    return table.assign(**{c: np.nan for c in ("score_low", "score_high") if c not in table})  # older RUNs


def _save(run: FeatureRun, rows: list[dict]) -> None:
    new = pd.DataFrame(rows)
    old = read_scores(run)
    if len(old):
        replaced = old.set_index([*KEY, "feature"]).index.isin(new.set_index([*KEY, "feature"]).index)
        new = pd.concat([old[~replaced], new], ignore_index=True)
    write_parquet(Path(run.path) / "scores.parquet", new)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (explainer, control, scorer) over features, with a 95 % bootstrap interval."""
    from scipy.stats import bootstrap

    out = []
    for key, group in rows.groupby(["explainer", "control", "scorer"]):
        values = group.score.dropna().to_numpy(dtype=float)
        low = high = float("nan")
        if len(values) > 1 and np.ptp(values) > 0:
            interval = bootstrap((values,), np.mean, n_resamples=2000, method="percentile", random_state=0).confidence_interval
            low, high = float(interval.low), float(interval.high)
        out.append({"explainer": key[0], "control": key[1], "scorer": key[2], "features": len(values),
                    "mean": float(values.mean()) if len(values) else float("nan"), "ci_low": low, "ci_high": high,
                    "failed_requests": int(group.failed.sum())})
    return pd.DataFrame(out)


def _write_manifest(run: FeatureRun, rows: list[dict], usage: Usage | None, seconds: float, max_contexts: int,
                    seed: int) -> None:
    path = Path(run.path) / "scores.json"
    manifest = read_json(path, "scores manifest") if path.is_file() else {}
    manifest.update({"summary": summarize(read_scores(run)).to_dict(orient="records"),
                     "last_run": {"rows": len(rows), "seconds": round(seconds, 1), "max_contexts": max_contexts,
                                  "seed": seed, "usage": usage.summary() if usage else None}})
    write_json(path, manifest)
