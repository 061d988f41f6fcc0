"""``GenderVectorConfig``: the settings of ``saescope bias gender-vector`` (light: the CLI imports it)."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.editing.config import RomeConfig
from saescope.errors import SaescopeError


@dataclass
class GenderVectorConfig:
    """Settings of the study. Example: ``GenderVectorConfig(names=100, layer=9)``."""

    names: int = 500
    """Names per gender (the model must gender them correctly); half discovery, half held-out."""
    layer: int | None = None
    """Edited layer; default: the MLP causal-trace peak over four discovery names."""
    prefixes: int = 0
    """Corpus prefixes per ROME edit (0: the prompt alone, ~2 s per edit on 2 CPU cores; ROME's 10
    make each edit ~10x slower)."""
    steps: int = 25
    """Adam steps of each ROME value optimisation."""
    stats_tokens: int = 50_000
    """Corpus tokens behind ROME's key statistics (cached per model and layer)."""
    batch: int = 16
    """ROME edits optimised together."""
    heldout_limit: int = 0
    """Flip-test at most this many held-out names per gender (0: all)."""
    ce_edits: int = 3
    """Edits whose CE/KL on held-out text is measured, per direction."""
    ce_tokens: int = 1024
    """Held-out tokens for CE/KL."""
    bias_side_effects: bool = True
    """Also run the bias module's occupation and definitional benchmarks with one held-out edit."""
    generations: int = 3
    """Held-out names whose generations are shown before and after the edit."""
    seed: int = 0
    """Seed of the name split, the classifier split and the random direction."""

    def __post_init__(self) -> None:
        for name in ("names", "steps", "batch", "ce_edits", "ce_tokens", "stats_tokens"):
            if getattr(self, name) < 1:
                raise SaescopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.names < 10:
            raise SaescopeError(f"names must be at least 10 per gender (the classifier needs a test split), got {self.names}")
        if self.prefixes < 0 or self.heldout_limit < 0 or self.generations < 0:
            raise SaescopeError("prefixes, heldout_limit and generations must be >= 0")

    def rome(self, layer: int) -> RomeConfig:
        """The ROME settings of every edit of the study."""
        return RomeConfig(layer=layer, prefixes=self.prefixes, steps=self.steps, stats_tokens=self.stats_tokens,
                          seed=self.seed)
