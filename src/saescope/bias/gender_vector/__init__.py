"""The gender vector in ROME's edit deltas: flip the gender of first names with rank-one edits,
classify the deltas, build one vector, flip held-out names with it and compare it with the CAA and SAE
gender directions (``study.run_gender_vector_study``; ``saescope bias gender-vector``).

``names`` (the shipped names, prompts and margins), ``vector`` (deltas, classifier, the box vector,
flip tests), ``side_effects``, ``report``, ``study``, ``config``. Names are imported lazily.
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"GenderVectorConfig": "config", "run_gender_vector_study": "study", "gendered_names": "names",
            "delta_classifier": "vector", "box_vector": "vector", "flip_test": "vector"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.bias.gender_vector",
                           {k: f"saescope.bias.gender_vector.{m}" for k, m in _EXPORTS.items()})
