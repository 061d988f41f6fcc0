"""SHIFT (Marks et al., 2024) on an offline biography set: train a profession probe on gender-confounded
biographies, ablate the SAE features it reads gender from, retrain, and compare with its baselines.

``core`` (pooled reads, swaps, probes), ``data`` (the shipped splits and replicas), ``selection`` (which
features are gender), ``run`` (every condition over several seeds), ``config`` (``ShiftConfig``).
Names are imported lazily.
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"ShiftConfig": "config", "run_shift": "run", "ShiftResult": "run", "GROUPS": "core",
            "write_replica": "data", "read_bios": "data"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.bias.shift", {k: f"saescope.bias.shift.{m}" for k, m in _EXPORTS.items()})
