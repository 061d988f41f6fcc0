"""A features RUN as a Neuronpedia export: the per-table batches that Neuronpedia's importer reads, the shape
in which hosted Neuronpedia publishes and takes in a source (its ``neuronpedia-datasets`` exports).

``saescope features export-neuronpedia RUN --format neuronpedia --out DIR --model-id M --sae-set S`` writes
``DIR/<M>/<layer>-<S>/`` with:
- ``release.jsonl``, ``model.jsonl``, ``sourceset.jsonl``, ``source.jsonl``: one record each, in the
  fields of Neuronpedia's ``SourceRelease``, ``Model``, ``SourceSet`` and ``Source`` tables;
- ``features/batch-<i>.jsonl.gz``: one ``Feature`` record per line, ``per_batch`` (128) features per
  batch;
- ``activations/batch-<i>.jsonl.gz``: the ``Activation`` records of the same features (top contexts and
  quantile samples; ``maxValue``, ``maxValueTokenIndex``, ``minValue`` computed per context);
- ``explanations/batch-<i>.jsonl.gz``: when the RUN has ``saescope explain`` results, one
  ``Explanation`` record per explanation that did not fail, ``typeName`` the explainer;
- ``export.json``: what was written from which RUN.

The records are built from the SAEDashboard batches of ``features.neuronpedia_export`` (one feature
record, two shapes), as Neuronpedia's own ``convert-saedashboard-to-neuronpedia-export.py`` builds them
from SAEDashboard's output. Record ids (``Activation.id``, ``Explanation.id``) are 25 characters derived from
(model, source, feature, position), so a second export of the same RUN gives the same ids. Times are the
RUN's creation time, not the export's. Each file is written atomically; a batch is gzip level 5.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from saescope.errors import SaescopeError
from saescope.features.neuronpedia_export import EMPTY_TABLES, PER_BATCH, check_export, feature_record, sample_bins
from saescope.features.run import FeatureRun
from saescope.storage import atomic_path, write_json

FEATURE_LISTS = (*EMPTY_TABLES, "neg_str", "neg_values", "pos_str", "pos_values", "freq_hist_data_bar_heights",
                 "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
                 "decoder_weights_dist")


def record_id(*parts: Any) -> str:
    """A 25-character id (Neuronpedia's cuid length) that depends only on ``parts``."""
    return "c" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24]


def feature_rows(dashboard: dict[str, Any], model_id: str, source_id: str, creator: str,
                 created: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One SAEDashboard feature as Neuronpedia's ``Feature`` record and its ``Activation`` records."""
    index = str(dashboard["feature_index"])
    activations = []
    for n, context in enumerate(dashboard["activations"]):
        values = context["values"]
        top = int(np.argmax(values)) if values else 0
        activations.append({
            "id": record_id(model_id, source_id, index, n), "tokens": context["tokens"], "index": index,
            "layer": source_id, "modelId": model_id, "maxValue": values[top] if values else 0.0,
            "maxValueTokenIndex": top, "minValue": min(values) if values else 0.0, "values": values,
            "creatorId": creator, "dataSource": None, "dataIndex": None, "dfaValues": [], "dfaTargetIndex": None,
            "dfaMaxValue": None, "createdAt": created, "lossValues": [], "logitContributions": None,
            "binMin": context["bin_min"], "binMax": context["bin_max"], "binContains": context["bin_contains"],
            "qualifyingTokenIndex": top})
    feature = {"modelId": model_id, "layer": source_id, "index": index, "creatorId": creator, "createdAt": created,
               "maxActApprox": max((a["maxValue"] for a in activations), default=0.0), "hasVector": False,
               "vector": [], "vectorLabel": None, "vectorDefaultSteerStrength": 10, "hookName": None,
               "topkCosSimIndices": [], "topkCosSimValues": [], "frac_nonzero": dashboard["frac_nonzero"],
               **{name: dashboard[name] for name in FEATURE_LISTS}}
    return feature, activations


def explanation_rows(run: FeatureRun, features: list[int], model_id: str, source_id: str, creator: str,
                     created: str) -> list[dict[str, Any]]:
    """Neuronpedia ``Explanation`` records of the RUN's explanations of ``features`` that did not fail."""
    explained = run.explanations()
    rows = []
    for feature in features:
        for n, item in enumerate(e for e in explained.get(feature, []) if e["explanation"]):
            rows.append({"id": record_id(model_id, source_id, feature, "explanation", n), "modelId": model_id,
                         "layer": source_id, "index": str(feature), "description": item["explanation"],
                         "authorId": creator, "embedding": None, "triggeredById": None,
                         "typeName": item["explainer"], "explanationModelName": item["model"] or None,
                         "notes": None, "createdAt": created})
    return rows


def export_neuronpedia_hosted(run: FeatureRun, out: str | Path, model_id: str, sae_set: str,
                              layer: int | None = None, per_batch: int = PER_BATCH,
                              features: list[int] | None = None, creator: str = "saescope",
                              description: str = "") -> Path:
    """Write the export of the module docstring under ``out``; returns the source's folder."""
    out, layer = check_export(out, model_id, sae_set, per_batch, run, layer)
    chosen = [int(f) for f in (np.flatnonzero(run.stats["density"].to_numpy() > 0) if features is None
                               else [run.check_feature(f) for f in features])]
    if not creator.strip():
        raise SaescopeError("a Neuronpedia export needs a creator name")
    source_id = f"{layer}-{sae_set}"
    folder = out / model_id / source_id
    created = _created(run)
    manifest = run.manifest
    heads = {
        "release.jsonl": {"name": sae_set, "description": description or f"saescope features of {manifest.get('model')}",
                          "creatorName": creator, "creatorId": creator, "visibility": "PUBLIC", "isNewUi": False,
                          "featured": False, "descriptionShort": description or None, "urls": [],
                          "creatorEmail": None, "creatorNameShort": creator, "defaultSourceSetName": sae_set,
                          "defaultSourceId": source_id, "defaultUmapSourceIds": [], "createdAt": created},
        "model.jsonl": {"id": model_id, "instruct": "instruct" in model_id.lower() or model_id.endswith("-it"),
                        "creatorId": creator, "displayNameShort": model_id, "displayName": str(manifest.get("model") or model_id),
                        "tlensId": None, "dimension": int(manifest.get("d_in", 0) or 0) or None,
                        "visibility": "PUBLIC", "defaultSourceSetName": sae_set, "defaultSourceId": source_id,
                        "inferenceEnabled": False, "layers": 0, "neuronsPerLayer": 0, "createdAt": created,
                        "owner": creator, "updatedAt": created, "website": None},
        "sourceset.jsonl": {"modelId": model_id, "name": sae_set, "creatorId": creator, "hasDashboards": True,
                            "visibility": "PUBLIC", "description": description or str(manifest.get("hook", "")),
                            "type": "", "creatorName": creator, "urls": [], "creatorEmail": None,
                            "releaseName": sae_set, "defaultOfModelId": None, "defaultRange": 1,
                            "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False,
                            "showHeadAttribution": False, "showUmap": False, "createdAt": created},
        "source.jsonl": {"id": source_id, "modelId": model_id, "setName": sae_set, "creatorId": creator,
                         "hasDashboards": True, "inferenceEnabled": False, "inferenceHosts": [], "saelensConfig": None,
                         "saelensRelease": None, "saelensSaeId": None, "hfRepoId": None, "hfFolderId": None,
                         "visibility": "PUBLIC", "defaultOfModelId": None, "hasUmap": False,
                         "hasUmapLogSparsity": False, "hasUmapClusters": False,
                         "num_prompts": int(manifest.get("windows", 0) or 0) or None,
                         "num_tokens_in_prompt": int(manifest.get("context", 0) or 0) or None,
                         "dataset": str(manifest.get("corpus", "")) or None, "notes": str(manifest.get("hook", "")),
                         "createdAt": created},
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, record in heads.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_text(json.dumps(record) + "\n")
    bins = sample_bins(run)
    batches = 0
    for index, start in enumerate(range(0, len(chosen), per_batch)):
        part = chosen[start:start + per_batch]
        tables: dict[str, list[dict[str, Any]]] = {"features": [], "activations": []}
        for f in part:
            feature, activations = feature_rows(feature_record(run, f, bins), model_id, source_id, creator, created)
            tables["features"].append(feature)
            tables["activations"] += activations
        tables["explanations"] = explanation_rows(run, part, model_id, source_id, creator, created)
        for table, rows in tables.items():
            if rows:
                _write_batch(folder / table / f"batch-{index}.jsonl.gz", rows)
        batches += 1
    write_json(folder / "export.json", {"run": str(run.path), "format": "neuronpedia", "model_id": model_id,
                                        "source_id": source_id, "features": len(chosen), "batches": batches,
                                        "per_batch": per_batch})
    return folder


def _write_batch(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(text.encode(), compresslevel=5, mtime=0))


def _created(run: FeatureRun) -> str:
    stamp = (run.path / "manifest.json").stat().st_mtime if (run.path / "manifest.json").exists() else 0.0
    return datetime.fromtimestamp(stamp, tz=timezone.utc).replace(tzinfo=None).isoformat()
