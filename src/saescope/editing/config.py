"""``RomeConfig`` and ``FtConfig``: the settings of a ROME and an FT-L edit (the CLI builds ``saescope edit rome``'s and
``edit ft``'s options from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saescope.errors import SaescopeError

METHODS = ("r-rome", "rome")


@dataclass
class RomeConfig:
    """How a ROME edit is made. Example: ``RomeConfig(layer=6, steps=25)``."""

    layer: int | None = None
    """Layer whose MLP output projection is edited; default: the peak of the MLP causal trace."""
    method: str = "r-rome"
    """r-rome (the update maps the averaged key exactly to the new value) | rome (the original code's
    update, whose key differs from the one its direction was computed with)."""
    steps: int = 25
    """Adam steps optimising the new value (stops early once the target's loss is under 0.05)."""
    lr: float = 0.5
    """Learning rate of the value optimisation."""
    kl_weight: float = 0.0625
    """Weight of KL(edited || original) on "{subject} is a", which keeps the subject's essence."""
    weight_decay: float = 0.5
    """Weight of ||delta|| / ||v||^2 (as in the ROME code)."""
    clamp_norm: float = 2.0
    """The value change is kept within this multiple of the original value's norm (ROME's GPT-2 XL
    setting is 4; on the embedded model's discovery names 2 kept efficacy and paraphrase at 1.0 and
    raised specificity from 0.917 to 0.95)."""
    prefixes: int = 10
    """Random corpus snippets put before the prompt when averaging the key and fitting the value."""
    stats_tokens: int = 50_000
    """Corpus tokens behind the key statistics E[k kᵀ] (computed once per model and layer, cached)."""
    seed: int = 0
    """Seed of the prefix choice."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SaescopeError(f"unknown method {self.method!r}: use r-rome or rome")
        for name in ("lr", "kl_weight", "weight_decay", "clamp_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SaescopeError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("steps", "stats_tokens"):
            if getattr(self, name) < 1:
                raise SaescopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.prefixes < 0:
            raise SaescopeError(f"prefixes must be >= 0, got {self.prefixes}")


@dataclass
class FtConfig:
    """How an FT-L edit is made (the ROME paper's constrained fine-tuning baseline).
    Example: ``FtConfig(layer=6, steps=25)``."""

    layer: int | None = None
    """Layer whose MLP output projection is fine-tuned (required)."""
    epsilon: float = 5e-4
    """L-infinity bound on every weight change."""
    steps: int = 25
    """Adam steps."""
    lr: float = 5e-4
    """Adam learning rate, in (0, 1]."""
    prefixes: int = 0
    """Random corpus snippets put before the prompt as extra training rows."""
    seed: int = 0
    """Seed of the prefix choice."""

    def __post_init__(self) -> None:
        if self.layer is None:
            raise SaescopeError("an FT-L edit needs a layer (layer=..., --layer)")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise SaescopeError(f"epsilon must be a positive number, got {self.epsilon}")
        if self.steps < 1 or not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise SaescopeError(f"steps must be >= 1 and lr a number in (0, 1], got steps {self.steps}, lr {self.lr}")
        if self.prefixes < 0:
            raise SaescopeError(f"prefixes must be >= 0, got {self.prefixes}")
