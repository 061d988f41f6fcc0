"""``ContrastFitConfig``: how ``contrast fit`` works (light: the CLI imports it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.errors import SaescopeError


@dataclass
class ContrastFitConfig:
    """How ``contrast fit`` works (``saescope contrast fit`` builds its options from these fields)."""

    hook: str | None = None
    """Hook point (must be the SAE's); default: the one the SAE names."""
    max_features: int = 64
    """Most features in the sparse fit and in the feature list."""
    alpha: float = 0.05
    """Benjamini-Hochberg false discovery rate for a feature to count as significant."""

    def __post_init__(self) -> None:
        if self.max_features <= 0:
            raise SaescopeError(f"max_features must be positive, got {self.max_features}")
        if not 0 < self.alpha < 1:
            raise SaescopeError(f"alpha must be in (0, 1), got {self.alpha}")
