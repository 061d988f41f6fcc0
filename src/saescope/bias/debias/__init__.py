"""Debias: build a gender-debiasing intervention from SAE features, choosing it on training data only.

One module per method, behind a registry (``registry.register_method``): ``erase`` (the default: SAE-
gated readout erasure), ``ablate`` and ``cap`` (``features``), ``steer`` and ``circuit``. ``plan_debias``
scores every candidate of a method on the selection prompts and training text and picks one;
``run_debias`` adds the before/after evaluation and ``DebiasRun.save`` writes the folder
``saescope bias debias --out`` writes. Names are imported lazily.
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"DebiasConfig": "config", "DebiasPlan": "plan", "plan_debias": "plan", "DebiasRun": "run",
            "run_debias": "run", "MethodContext": "registry", "register_method": "registry",
            "method_names": "registry", "readout_directions": "erase", "readout_direction": "erase",
            "female_direction": "steer", "SelectionScorer": "selection"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.bias.debias", {k: f"saescope.bias.debias.{m}" for k, m in _EXPORTS.items()})
