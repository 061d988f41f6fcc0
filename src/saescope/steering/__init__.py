"""Interventions on the model (feature edits, vectors, erasure, IBM alignment steering), sweeps,
and contrastive steering from prompt pairs (``steering.contrast``).

Names are imported lazily; loading a saved intervention imports (and so registers) every kind."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Intervention": "base", "Interventions": "base", "load_intervention": "base",
            "FeatureGate": "erasure", "SubspaceErasure": "erasure", "FeatureEdit": "features",
            "FeatureSteering": "features", "AlignmentScores": "ibm", "AlignmentSteering": "ibm",
            "score_features": "ibm", "VectorSteering": "vectors"}
KINDS = ("features", "vectors", "erasure", "ibm")  # the modules that register saved intervention types
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saescope.steering' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"saescope.steering.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
