"""``ExplainConfig``: the settings of ``saescope explain`` (light: the CLI imports it at start-up, before
torch or pandas are needed)."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.errors import SaescopeError


@dataclass
class ExplainConfig:
    """How features are explained (``saescope explain`` builds its options from it)."""

    top: int = 4
    """Top-K contexts from the RUN shown to the explainer."""
    per_quantile: int = 1
    """Explain-split samples shown per activation quantile (when the RUN has samples)."""
    left: int = 8
    """Tokens shown before each context's sampled token."""
    right: int = 2
    """Tokens shown after it."""
    max_tokens: int = 16
    """Most tokens the explainer may write."""
    chunk: int = 16
    """Features per chunk (the table is saved after each)."""

    def __post_init__(self) -> None:
        if min(self.per_quantile, self.left, self.right) < 0:
            raise SaescopeError("per_quantile, left and right must be >= 0")
        for name in ("top", "max_tokens", "chunk"):
            if getattr(self, name) <= 0:
                raise SaescopeError(f"{name} must be positive, got {getattr(self, name)}")
