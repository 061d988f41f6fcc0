"""Interventions on the model (feature edits, vectors, erasure, IBM alignment steering), sweeps,
and contrastive steering from prompt pairs (``steering.contrast``).

Names are imported lazily; loading a saved intervention imports (and so registers) every kind."""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"Intervention": "base", "Interventions": "base", "load_intervention": "base",
            "FeatureGate": "erasure", "SubspaceErasure": "erasure", "TokenGate": "token_gate", "FeatureEdit": "features",
            "FeatureSteering": "features", "AlignmentScores": "ibm", "AlignmentSteering": "ibm",
            "score_features": "ibm", "VectorSteering": "vectors", "PromptPrefix": "prompt"}
KINDS = ("features", "vectors", "erasure", "ibm", "prompt")  # the modules that register saved intervention types
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.steering", {name: f"saescope.steering.{module}" for name, module in _EXPORTS.items()})
