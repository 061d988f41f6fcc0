"""``ExtractConfig``: what defines a features extraction run (light: the CLI imports it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.errors import SaescopeError


@dataclass
class ExtractConfig:
    """A features extraction run (``saescope features extract`` builds its options from these fields)."""

    tokens: int = 1_000_000
    """Tokens to run over."""
    corpus: str = "embedded"
    """'embedded' (its train split), or a .txt / .jsonl file (all of it)."""
    hook: str | None = None
    """Hook point; default: the one the SAE names."""
    batch_size: int = 16
    """Windows per forward pass."""
    context: int = 128
    """Tokens per window."""
    top_k: int = 20
    """Top activating examples kept per feature."""
    checkpoint_every: int = 50
    """Batches between checkpoints."""
    activations: str | None = None
    """A hook point's activation cache (``saescope activations cache``, e.g. acts/blocks.12.hook_resid_post)
    to read instead of running the model; its corpus and context must be the run's."""

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "top_k", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise SaescopeError(f"{name} must be positive, got {getattr(self, name)}")
        if self.context < 2:
            raise SaescopeError(f"context must be at least 2 tokens, got {self.context}")
