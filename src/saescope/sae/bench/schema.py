"""SAEBench's output envelope (v0.6, ``sae_bench/evals/base_eval_output.py``): what its readers and
Neuronpedia's SAEBench viewer load.

Every file is one JSON object: ``eval_type_id``, ``eval_config``, ``eval_id`` (a UUID),
``datetime_epoch_millis``, ``eval_result_metrics`` (``{category: {metric: value}}`` with SAEBench's
category and metric names), ``eval_result_details`` (a list of per-item records), ``sae_bench_commit_hash``,
``sae_lens_id``, ``sae_lens_release_id``, ``sae_lens_version``, ``sae_cfg_dict`` and
``eval_result_unstructured``. Fields SAEBench has no place for go in ``eval_result_unstructured``
(e.g. which explained-variance definition is which), never in the metrics. Files are named
``<eval_type_id>/<sae name>_eval_results.json`` under the output folder, SAEBench's layout.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

from saescope.sae.core import SAE
from saescope.storage import write_json
from saescope.version import __version__

FIELDS = ("eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis", "eval_result_metrics",
          "eval_result_details", "sae_bench_commit_hash", "sae_lens_id", "sae_lens_release_id", "sae_lens_version",
          "sae_cfg_dict", "eval_result_unstructured")


def sae_cfg_dict(sae: SAE, model: str) -> dict[str, Any]:
    """The SAE's config in SAELens's field names (what SAEBench stores as ``sae_cfg_dict``)."""
    cfg = sae.cfg
    architecture = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}[cfg.activation]
    return {"architecture": architecture, "d_in": sae.d_in, "d_sae": sae.d_sae, "hook_name": cfg.hook_name,
            "model_name": model, "k": cfg.k, "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
            "dtype": str(sae.W_enc.dtype).removeprefix("torch."), "device": str(sae.W_enc.device),
            "trained_activation": cfg.activation}


def finite(value: Any) -> Any:
    """JSON has no NaN: a non-finite float becomes ``None`` (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def eval_output(eval_type_id: str, config: dict[str, Any], metrics: dict[str, dict[str, Any]],
                details: list[dict[str, Any]], sae: SAE, sae_name: str, model: str,
                unstructured: dict[str, Any] | None = None) -> dict[str, Any]:
    """One SAEBench result object."""
    return finite({
        "eval_type_id": eval_type_id, "eval_config": config, "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(time.time() * 1000), "eval_result_metrics": metrics,
        "eval_result_details": details, "sae_bench_commit_hash": f"saescope-{__version__}",
        "sae_lens_id": sae_name, "sae_lens_release_id": "saescope", "sae_lens_version": None,
        "sae_cfg_dict": sae_cfg_dict(sae, model), "eval_result_unstructured": unstructured})


def write_output(out: Path, result: dict[str, Any]) -> Path:
    """``out/<eval_type_id>/<sae name>_eval_results.json``, written atomically."""
    path = Path(out) / result["eval_type_id"] / f"{result['sae_lens_id']}_eval_results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, result)
