"""``TrainConfig``: everything that defines an SAE training run (``saescope sae train`` builds its
options from these fields and their docstrings); saved as ``OUT/train_config.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saescope.errors import SaescopeError


@dataclass
class TrainConfig:
    """An SAE training run. Example: ``TrainConfig(hook="blocks.6.hook_resid_post", features=1024, k=16)``."""

    hook: str = "blocks.12.hook_resid_post"
    """Hook point to train on (``blocks.L.hook_resid_post`` or a module path)."""
    model: str | None = None
    """Hub id or local folder of the model; default: the embedded model."""
    features: int = 4608
    """Number of SAE features (d_sae)."""
    activation: str = "topk"
    """topk | batchtopk | relu | jumprelu."""
    k: int | None = 32
    """Active features per token (topk, batchtopk); ignored by relu and jumprelu."""
    tokens: int = 2_000_000
    """Training tokens, across all epochs."""
    batch_size: int = 2048
    """Tokens per optimizer step."""
    lr: float | None = None
    """Learning rate; default 2e-4 / sqrt(features / 16384) (Gao et al. 2024)."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up steps."""
    decay_fraction: float = 0.2
    """Share of the steps, at the end, over which the learning rate decays linearly to 0."""
    sparsity_coeff: float = 0.0
    """L1 (relu) or L0 (jumprelu) coefficient."""
    auxk_coeff: float = 1 / 32
    """Weight of the AuxK loss on dead latents (topk, batchtopk)."""
    dead_after_tokens: int = 250_000
    """A latent that has not fired for this many tokens counts as dead (for AuxK and the log)."""
    context: int = 128
    """Tokens per window of the corpus."""
    model_batch: int = 16
    """Windows per forward pass of the model."""
    buffer_tokens: int = 262_144
    """Most activations held in the shuffle buffer; never more than an eighth of the run's unique tokens
    (but at least two batches), so short runs start stepping within seconds."""
    epochs: int = 1
    """Passes over the same tokens; >1 caches the first pass's activations on disk and replays them."""
    corpus: str = "embedded"
    """'embedded' (its train split), or a .txt / .jsonl file."""
    seed: int = 0
    """Seed of the corpus shuffle, the initialisation and the buffer shuffle."""
    dtype: str = "auto"
    """Precision of the model's forward pass and of the SAE encoder's matmul: auto (bfloat16 only where
    it is faster, see ``saescope info``) | float32 | bfloat16. The SAE's weights stay float32."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, mps."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    log_every: int = 25
    """Steps between lines of OUT/training_log.jsonl."""
    eval_every: int = 0
    """Steps between held-out evaluations (``sae eval``'s metrics on the corpus' held-out split, written
    to OUT/heldout_log.jsonl); 0: none."""
    eval_tokens: int = 4096
    """Held-out tokens of each of those evaluations."""
    keep_activations: bool = False
    """Keep the epochs' activation cache (OUT/activations) after training."""
    matryoshka: list[int] | None = None
    """batchtopk only: Matryoshka BatchTopK (Bussmann et al. 2025) — the nested prefix widths of the
    dictionary (e.g. 256,1024,4608) whose reconstructions are each trained; the full width is added
    when missing. The saved SAE is a plain BatchTopK one (JumpReLU at inference)."""
    activations: str | None = None
    """A folder of cached activations for this hook (``activations.cache``, as ``sae train-suite`` writes
    them) to train on instead of running the model; replayed, reshuffled, as often as ``tokens`` needs."""

    def __post_init__(self) -> None:
        if self.tokens <= 0 or self.batch_size <= 0 or self.features <= 0:
            raise SaescopeError("tokens, batch_size and features must be positive")
        if self.epochs < 1:
            raise SaescopeError("epochs must be at least 1")
        from saescope.sae.core import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise SaescopeError(f"unknown SAE activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if self.activation in ("topk", "batchtopk") and not self.k:
            raise SaescopeError(f"a {self.activation} SAE needs k (active features per token)")
        if self.activation not in ("topk", "batchtopk"):
            self.k = None
        for name in ("context", "model_batch", "buffer_tokens", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise SaescopeError(f"{name} must be positive, got {getattr(self, name)}")
        if self.matryoshka is not None:
            widths = [int(w) for w in (self.matryoshka.split(",") if isinstance(self.matryoshka, str) else self.matryoshka)]
            if self.activation != "batchtopk":
                raise SaescopeError("matryoshka widths need --activation batchtopk (Matryoshka BatchTopK)")
            if not widths or widths != sorted(set(widths)) or widths[0] < 1 or widths[-1] > self.features:
                raise SaescopeError(f"matryoshka widths must increase strictly within 1-{self.features}, got {widths}")
            self.matryoshka = widths if widths[-1] == self.features else [*widths, self.features]
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise SaescopeError(f"lr must be a positive number, got {self.lr}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.features / 16384)

    @property
    def total_steps(self) -> int:
        return max(1, self.tokens // self.batch_size)

    @property
    def shuffle_buffer(self) -> int:
        """The buffer actually used (see ``buffer_tokens``)."""
        unique = self.tokens // self.epochs
        return max(2 * self.batch_size, min(self.buffer_tokens, unique // 8))
