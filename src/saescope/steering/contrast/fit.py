"""``saescope contrast fit``: from pairs to three steering interventions and a report (see ``contrast``).

Writes DIR/ (atomically): ``report.json`` (positions, CAA norm, sparse-fit curve, clusters),
``features.parquet`` (every feature's test), and three intervention files usable by
``saescope steer --intervention``: ``caa.json``, ``sae_fit.json`` (the sparse OMP fit),
``top_cluster.json`` (least squares on the top cluster's features only).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.steering import FeatureEdit, FeatureSteering, Intervention, VectorSteering
from saescope.steering.contrast.config import ContrastFitConfig
from saescope.steering.contrast.pairs import ContrastPair
from saescope.steering.contrast.stats import (
    cluster_features,
    feature_tests,
    least_squares_on,
    pair_activations,
    sparse_fit,
)
from saescope.storage import atomic_path, write_json

TARGET_R2 = 0.8


def fit_contrast(lm: LoadedModel, sae: SAE, pairs: list[ContrastPair], out: str | Path,
                 config: ContrastFitConfig | None = None, *, run: Any = None,
                 **fields: Any) -> dict[str, Any]:
    """Fit and write everything (``config``, or keyword ``fields`` of ``ContrastFitConfig``); returns the report.
    ``run``, a features RUN of the same SAE (``saescope.features.run.FeatureRun``), adds top tokens.

    Example::

        report = fit_contrast(lm, load_sae("default"), read_pairs("pairs.jsonl"), "contrast/gender")
        report["sparse_fit"]["chosen"]
    """
    config = replace(config or ContrastFitConfig(), **fields)
    hook, max_features, alpha = config.hook or sae.cfg.hook_name, config.max_features, config.alpha
    if sae.cfg.hook_name and hook != sae.cfg.hook_name:
        raise SaescopeError(f"the SAE was trained on {sae.cfg.hook_name}, not {hook}: use an SAE for that hook")
    hook = lm.check_sae(sae, hook)
    started = time.perf_counter()
    acts = pair_activations(lm, sae, hook, pairs)
    forward_seconds = time.perf_counter() - started
    caa = acts.deltas.mean(0)
    tests = feature_tests(acts.feature_deltas, alpha)
    chosen = tests[tests.significant].head(max_features).copy()
    chosen["cluster"] = cluster_features(sae, chosen.feature.tolist(), acts.token_feats)
    if run is not None:
        chosen["top_tokens"] = [list(run.stats.top_tokens.iloc[f])[:8] for f in chosen.feature]
    curve, path = sparse_fit(sae, caa, max_features)
    step = next((i for i, row in enumerate(curve) if row["r2"] >= TARGET_R2), len(curve) - 1)
    coefs = path[:, step]
    clusters = _cluster_summary(chosen)
    top = clusters[0]["features"] if clusters else []
    interventions: dict[str, Intervention] = {"caa": VectorSteering(hook, caa, 1.0, name="caa"),
                     "sae_fit": FeatureSteering(sae, [FeatureEdit(int(f), "add", float(coefs[f]))
                                                      for f in coefs.nonzero().flatten()])}
    if top:
        cluster_coefs = least_squares_on(sae, caa, top)
        interventions["top_cluster"] = FeatureSteering(sae, [FeatureEdit(f, "add", float(c))
                                                             for f, c in zip(top, cluster_coefs)])
    report = {
        "hook": hook, "n_pairs": len(pairs), "pairs_aligned_by_position": acts.aligned,
        "positions": [{"offset_from_first_difference": k, "mean_delta_norm": sum(v) / len(v), "n_pairs": len(v)}
                      for k, v in sorted(acts.position_norms.items())],
        "caa_norm": float(caa.norm()), "median_residual_norm": acts.residual_norm,
        "caa_norm_relative": float(caa.norm()) / acts.residual_norm,
        "n_significant_features": int(tests.significant.sum()), "alpha": alpha,
        "sparse_fit": {"curve": curve, "chosen": curve[step], "target_r2": TARGET_R2},
        "clusters": clusters, "interventions": sorted(interventions),
        "seconds": round(time.perf_counter() - started, 1), "forward_seconds": round(forward_seconds, 1),
    }
    for intervention in interventions.values():
        intervention.model_name = lm.name
    _write(Path(out), report, tests, chosen, interventions)
    return report


def _cluster_summary(chosen: pd.DataFrame) -> list[dict[str, Any]]:
    clusters = []
    for label, group in chosen.groupby("cluster"):
        entry = {"cluster": int(label), "features": group.feature.astype(int).tolist(),
                 "weight": float(group.cohens_dz.abs().sum()), "mean_dz": float(group.cohens_dz.mean())}
        if "top_tokens" in group:
            entry["top_tokens"] = {int(f): t for f, t in zip(group.feature, group.top_tokens)}
        clusters.append(entry)
    return sorted(clusters, key=lambda c: -c["weight"])


def _write(out: Path, report: dict, tests: pd.DataFrame, chosen: pd.DataFrame, interventions: dict) -> None:
    with atomic_path(out) as tmp:
        tmp.mkdir()
        tests.merge(chosen[["feature", "cluster"]], on="feature", how="left").to_parquet(tmp / "features.parquet")
        write_json(tmp / "report.json", report)
        for name, intervention in interventions.items():
            intervention.save(tmp / f"{name}.json")
