"""A folder of bias results, written at once: ``metrics.json``, ``report.html`` and what they came from
(the intervention or edit, the chosen features, the selection table). ``bias eval --out`` and
``DebiasRun.save`` write it; nothing is half-written on failure (the folder is replaced atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from saescope.bias.evaluation import BiasEvaluation
from saescope.bias.report import write_report
from saescope.storage import atomic_path, write_json


def write_results(out: str | Path, evaluation: BiasEvaluation, title: str, applied: Any = None,
                  features: pd.DataFrame | None = None, selection: pd.DataFrame | None = None,
                  settings: dict | None = None, extra: dict[str, dict] | None = None) -> Path:
    """Write the folder ``out``: ``applied`` (an intervention or edit) under its ``FILE_NAME``
    (``intervention.json`` or ``edit/``), ``features.csv``, ``selection.csv`` and ``extra`` JSON files."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / "metrics.json", evaluation.to_dict())
        if applied is not None:
            applied.save(tmp / applied.FILE_NAME)
        if features is not None:
            features.to_csv(tmp / "features.csv", index=False)
        if selection is not None:
            selection.to_csv(tmp / "selection.csv", index=False)
        for name, content in (extra or {}).items():
            write_json(tmp / name, content)
        write_report(tmp / "report.html", evaluation, title, features, selection, settings)
    return out
