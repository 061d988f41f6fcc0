"""``SampleConfig``: the settings of ``saescope features sample`` (light: the CLI imports it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.errors import SaescopeError


@dataclass
class SampleConfig:
    """Sampling contexts across the activation range (``saescope features sample`` builds its options from it)."""

    tokens: int = 200_000
    """Tokens of new text to run over."""
    bins: int = 5
    """Activation quantile bins per feature."""
    per_bin: int = 6
    """Contexts kept per (feature, bin, split), and as many non-activating ones."""
    left: int = 16
    """Context tokens kept before the sampled token."""
    right: int = 4
    """Context tokens kept after it."""
    negatives_per_window: int = 4
    """Random positions per window offered as non-activating candidates."""
    batch_size: int = 16
    """Windows per forward pass."""
    seed: int = 0
    """Seed of the reservoir priorities and negative positions."""

    def __post_init__(self) -> None:
        for name in ("tokens", "bins", "per_bin", "negatives_per_window", "batch_size"):
            if getattr(self, name) <= 0:
                raise SaescopeError(f"{name} must be positive, got {getattr(self, name)}")
        if self.left < 0 or self.right < 0:
            raise SaescopeError("left and right context sizes must be >= 0")
