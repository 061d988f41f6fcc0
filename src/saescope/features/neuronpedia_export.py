"""A features RUN as the feature batches a self-hosted Neuronpedia imports, in SAEDashboard's shape.

``saescope features export-neuronpedia RUN --out DIR --model-id M --sae-set S`` writes:
- ``DIR/batch-0.json``, ``batch-1.json``, …, each ``{"model_id", "layer", "sae_set", "features": [...]}``
  with ``per_batch`` features (128, SAEDashboard's ``n_features_per_batch``);
- ``DIR/export.json``, saying what was written from which RUN.

Each feature has the fields of SAEDashboard's ``NeuronpediaDashboardFeature`` (``neuronpedia_dashboard.py``),
filled from the RUN:
- ``pos_str``/``pos_values`` and ``neg_str``/``neg_values``: the logit effects (promoted, suppressed);
- ``frac_nonzero``: the density;
- ``freq_hist_data_bar_values``/``_heights``: the histogram of non-zero activations, as bin centres and
  counts. The two arrays are parallel, one value per height. (Sending the ``n + 1`` edges breaks
  Neuronpedia's feature page.)
- ``activations``:
  - the top contexts, with SAEDashboard's "top activations" bin: ``bin_min`` −1, ``bin_max`` the
    maximum, ``bin_contains`` −1;
  - when ``features sample`` has run, its quantile contexts (split "explain"), each group as an
    interval: ``bin_min``/``bin_max`` the group's activations, and ``bin_contains`` the share of
    non-zero activations in one quantile bin;
  - tokens and values are per position, values rounded to 3 decimals as SAEDashboard rounds them.
- ``n_prompts_total``, ``n_tokens_in_prompt``, ``dataset``: from the manifest.

Left empty, because a RUN does not measure them:
- the neuron-alignment and correlated-neuron/feature tables;
- the logit histogram;
- ``decoder_weights_dist``.

Neuronpedia shows the page without them. Dead features (density 0) are left out, as SAEDashboard
leaves them out ("skipped indexes"). ``--format neuronpedia`` writes the same records as a Neuronpedia
export instead (``features.neuronpedia_hosted``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun
from saescope.storage import atomic_path, read_json, write_json

PER_BATCH = 128
EMPTY_TABLES = ("neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson",
                "correlated_features_indices", "correlated_features_l1", "correlated_features_pearson")


def _round(values: Any) -> list[float]:
    return [round(float(v), 3) for v in values]


def _activation(row: Any, bin_min: float, bin_max: float, bin_contains: float) -> dict[str, Any]:
    return {"bin_min": bin_min, "bin_max": bin_max, "bin_contains": bin_contains,
            "tokens": list(row.context_tokens), "values": _round(row.context_acts)}


def feature_record(run: FeatureRun, feature: int, bins: int | None = None) -> dict[str, Any]:
    """One feature in SAEDashboard's ``NeuronpediaDashboardFeature`` fields (module docstring)."""
    info = run.feature(feature)
    counts, edges = info["histogram"]
    centres = (edges[:-1] + edges[1:]) / 2
    examples = info["examples"]
    top = float(examples.activation.max()) if len(examples) else 0.0
    activations = [_activation(r, -1, round(top, 3), -1) for r in examples.itertuples()]
    samples = run.samples_of(feature)
    if samples is not None:
        mine = samples[(samples.split == "explain") & (samples["quantile"] >= 0)]
        share = round(1 / (bins or (int(mine["quantile"].max()) + 1 if len(mine) else 1)), 4)
        for _, group in mine.groupby("quantile", sort=False):
            low, high = round(float(group.activation.min()), 3), round(float(group.activation.max()), 3)
            activations += [_activation(r, low, high, share) for r in group.itertuples()]
    manifest = run.manifest
    return {"feature_index": int(feature), **{name: [] for name in EMPTY_TABLES},
            "neg_str": list(info["suppressed"].token), "neg_values": _round(info["suppressed"].value),
            "pos_str": list(info["promoted"].token), "pos_values": _round(info["promoted"].value),
            "frac_nonzero": float(info["stats"]["density"]),
            "freq_hist_data_bar_values": _round(centres), "freq_hist_data_bar_heights": [int(c) for c in counts],
            "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
            "n_prompts_total": int(manifest.get("windows", 0) or 0),
            "n_tokens_in_prompt": int(manifest.get("context", 0) or 0), "dataset": str(manifest.get("corpus", "")),
            "decoder_weights_dist": [], "activations": activations}


def check_export(out: str | Path, model_id: str, sae_set: str, per_batch: int, run: FeatureRun,
                 layer: int | None) -> tuple[Path, int]:
    """The output folder and the layer of an export, or a one-line error for bad input."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SaescopeError(f"{out} is a file: --out must name a folder")
    if per_batch <= 0:
        raise SaescopeError(f"per_batch must be positive, got {per_batch}")
    if not model_id.strip() or not sae_set.strip():
        raise SaescopeError("a Neuronpedia export needs a model id and an SAE set name")
    return out, hook_layer(run.manifest.get("hook", "")) if layer is None else layer


def sample_bins(run: FeatureRun) -> int | None:
    """The quantile count of the RUN's ``features sample`` (None: each feature's own count)."""
    settings = read_json(run.path / "samples.json", "samples settings") if (run.path / "samples.json").is_file() else {}
    return int(settings["bins"]) if "bins" in settings else None


def export_neuronpedia(run: FeatureRun, out: str | Path, model_id: str, sae_set: str, layer: int | None = None,
                       per_batch: int = PER_BATCH, features: list[int] | None = None) -> list[Path]:
    """Write ``out/batch-<i>.json`` (``per_batch`` features each) and ``out/export.json``; returns the batches."""
    out, layer = check_export(out, model_id, sae_set, per_batch, run, layer)
    alive = np.flatnonzero(run.stats["density"].to_numpy() > 0)
    chosen = alive if features is None else np.array([run.check_feature(f) for f in features], dtype=np.int64)
    bins = sample_bins(run)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, start in enumerate(range(0, len(chosen), per_batch)):
        batch = {"model_id": model_id, "layer": layer, "sae_set": sae_set,
                 "features": [feature_record(run, int(f), bins) for f in chosen[start:start + per_batch]]}
        with atomic_path(out / f"batch-{index}.json") as tmp:
            tmp.write_text(json.dumps(batch))
        written.append(out / f"batch-{index}.json")
    skipped = sorted(set(range(run.d_sae)) - set(int(f) for f in chosen)) if features is None else []
    write_json(out / "export.json", {"run": str(run.path), "model_id": model_id, "sae_set": sae_set, "layer": layer,
                                     "features": int(len(chosen)), "batches": len(written), "per_batch": per_batch,
                                     "skipped_indexes": skipped})
    return written


def hook_layer(hook: str) -> int:
    """The layer of a ``blocks.<L>.…`` hook point."""
    parts = hook.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    raise SaescopeError(f"cannot tell the layer from the RUN's hook {hook!r}: give --layer")
