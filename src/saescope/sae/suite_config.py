"""``SuiteConfig``: the settings of ``saescope sae train-suite`` (the CLI builds its options from these
fields and their docstrings); saved in ``OUT/suite.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

from saescope.errors import SaescopeError
from saescope.sae.train_config import TrainConfig

SHIPPED_LAYERS = (2, 6, 9, 12, 15, 18, 21, 24)
"""Layers of the suite shipped for the embedded model (layer 12 is the bundled SAE)."""


@dataclass
class SuiteConfig:
    """A suite training run. Example: ``SuiteConfig(layers=[2, 6, 9], features=2304, k=48, tokens=500_000)``."""

    layers: list[int] = field(default_factory=lambda: [2, 6, 9, 15, 18, 21, 24])
    """Layers whose residual stream (``blocks.L.hook_resid_post``) gets an SAE."""
    model: str | None = None
    """Hub id or local folder of the model; default: the embedded model."""
    features: int = 2304
    """Features per SAE (d_sae)."""
    activation: str = "topk"
    """topk | batchtopk | relu | jumprelu."""
    k: int | None = 48
    """Active features per token (topk, batchtopk)."""
    tokens: int = 500_000
    """Unique corpus tokens run through the model (once, for all hook points)."""
    epochs: int = 4
    """Passes of each SAE over the cached tokens."""
    eval_tokens: int = 20_000
    """Held-out tokens each finished SAE is evaluated on (0: skip)."""
    save_dtype: str = "bfloat16"
    """Precision of the saved weights: bfloat16 (half the size) | float32."""
    dtype: str = "auto"
    """Precision of the model's forward pass: auto | float32 | bfloat16."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, mps."""
    seed: int = 0
    """Seed of the corpus shuffle and of every SAE's initialisation."""
    keep_activations: bool = False
    """Keep OUT/activations (the cached activations) after training."""

    def __post_init__(self) -> None:
        if not self.layers:
            raise SaescopeError("a suite needs at least one layer")
        if len(set(self.layers)) != len(self.layers):
            raise SaescopeError(f"layers must not repeat, got {self.layers}")
        if self.tokens <= 0 or self.epochs < 1 or self.eval_tokens < 0:
            raise SaescopeError("tokens must be positive, epochs at least 1 and eval_tokens not negative")
        if self.save_dtype not in ("bfloat16", "float32"):
            raise SaescopeError(f"save_dtype must be bfloat16 or float32, got {self.save_dtype!r}")
        self.train_config(self.hooks[0])  # validates features / activation / k

    @property
    def hooks(self) -> list[str]:
        return [f"blocks.{layer}.hook_resid_post" for layer in sorted(self.layers)]

    def train_config(self, hook: str, activations: str | None = None) -> TrainConfig:
        """The ``TrainConfig`` of one SAE of the suite."""
        return TrainConfig(hook=hook, model=self.model, features=self.features, activation=self.activation, k=self.k,
                           tokens=self.tokens * self.epochs, epochs=self.epochs, dtype=self.dtype, device=self.device,
                           seed=self.seed, activations=activations)
