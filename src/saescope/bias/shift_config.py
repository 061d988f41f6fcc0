"""``ShiftConfig``: the settings of ``saescope shift run`` (light: the CLI imports it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ShiftConfig:
    """A SHIFT run. Example: ``ShiftConfig(readout_layer=18, top=50, seeds=3)``."""

    readout_layer: int = 18
    """Layer whose residual stream (mean-pooled) the probe reads; SAEs at or below it are attributed."""
    top: int = 50
    """How many features (largest |effect| on the probe) are candidates for ablation."""
    attribution_bios: int = 128
    """Training biographies the attribution is averaged over."""
    seeds: int = 3
    """Resamplings of 80 % of the training biographies (the spread of every figure)."""
    features: list[str] = field(default_factory=list)
    """Features to ablate instead of the automatic choice, as ``LAYER:ID`` (e.g. ``12:3870``)."""
    limit: int | None = None
    """Use only the first N biographies of each split (quick runs); default all 400."""
