"""``ShiftConfig``: the settings of ``saescope bias shift run`` (light: the CLI imports it at start-up)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from saescope.errors import SaescopeError

READOUT_INPUTS = ("reconstruction", "residual")


@dataclass
class ShiftConfig:
    """A SHIFT run. Example: ``ShiftConfig(readout_layer=18, top=50, seeds=3)``."""

    readout_layer: int = 18
    """Layer whose residual stream (mean-pooled) the probe reads; SAEs at or below it are attributed."""
    top: int = 200
    """How many features (largest |effect| on the probe) are candidates for ablation. 200 was chosen on the
    training split: gender features sit at attribution ranks ~30-200, and on gender-swapped held-out
    training biographies the retrained probe scored 0.49 / 0.56 / 0.58 / 0.59 with 50 / 100 / 200 / 400."""
    attribution_bios: int = 128
    """Training biographies the attribution is averaged over."""
    seeds: int = 3
    """Resamplings of 80 % of the training biographies (the spread of every figure)."""
    selection: str = "swap"
    """How gender features are picked among the candidates: swap (their activation moves when names and
    pronouns are swapped) | definitional (the bias module's definitional-gender features)."""
    swap_threshold: float = 0.5
    """swap: the least |change| under the gender swap, in standard deviations of the feature's activation."""
    features: list[str] = field(default_factory=list)
    """Features to ablate instead of the automatic choice, as ``LAYER:ID`` (e.g. ``12:3870``)."""
    probe_c: float = 1e-3
    """Inverse L2 strength of every probe (scikit-learn's ``C`` on standardized inputs), the same for every
    condition. Chosen on the training split alone: 300 training biographies to fit, the other 100 plus their
    gender-swapped copies as a balanced validation set; SHIFT's profession / gender accuracy there was
    0.825/0.515, 0.845/0.515, 0.85/0.54, 0.86/0.59, 0.835/0.645, 0.795/0.695 with C = 1e-4, 3e-4, 1e-3, 3e-3,
    1e-2, 0.1 (the original probe: 0.815/0.555 ... 0.70/0.80). 1e-3 is the most accurate under 0.55 gender.
    The earlier default, 0.1, lets the retrained probe fit the shortcut again from what gender is left."""
    readout_input: str = "residual"
    """What every probe reads at the readout layer: residual (the raw residual stream) | reconstruction (the
    readout SAE's reconstruction, its error term left out, so everything a probe can use is a feature SHIFT can
    see and ablate). Chosen on three replicas built from the training vocabulary only (``saescope bias shift
    replica``): SHIFT's profession accuracy 0.865 / 0.883 / 0.922 on the residual stream, 0.794 / - / 0.819 on
    the reconstruction (docs/results/figures.md, SHIFT)."""
    train: str = "train"
    """Confounded training biographies: a shipped split (train, oracle_train, test) or a JSONL file of
    ``{text, profession, gender}`` (profession 1 = professor-like, gender 1 = female)."""
    oracle_train: str = "oracle_train"
    """Balanced training biographies for the oracle probe (a shipped split or a JSONL file)."""
    test: str = "test"
    """Balanced evaluation biographies (a shipped split or a JSONL file)."""
    limit: int | None = None
    """Use only the first N biographies of each split (quick runs); default all 400."""

    def __post_init__(self) -> None:
        if self.selection not in ("swap", "definitional"):
            raise SaescopeError(f"unknown selection {self.selection!r}: use swap or definitional")
        if self.readout_input not in READOUT_INPUTS:
            raise SaescopeError(f"unknown readout_input {self.readout_input!r}: use {' or '.join(READOUT_INPUTS)}")
        if not (math.isfinite(self.probe_c) and self.probe_c > 0):
            raise SaescopeError(f"probe_c must be a positive number, got {self.probe_c}")
        if not (math.isfinite(self.swap_threshold) and self.swap_threshold > 0):
            raise SaescopeError(f"swap_threshold must be a positive number, got {self.swap_threshold}")
        for name in ("seeds", "top", "attribution_bios"):
            if getattr(self, name) < 1:
                raise SaescopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 4:
            raise SaescopeError(f"limit must be at least 4 (one biography per profession and gender), got {self.limit}")
