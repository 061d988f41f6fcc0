"""Train a transcoder for every chosen layer from one pass over the corpus (``saescope transcoders train``).

Each model forward pass over a batch of windows captures every layer's MLP input and output at once
(``hooks_activations``: one pass, stopped after the last layer needed), and each layer's transcoder
takes one Adam step on that batch's tokens, as EleutherAI's sparsify trains all layers together
(``--transcode``). Attention sinks are left out of both sides. Inputs and targets are scaled per layer
to unit mean norm × √d (factors taken from the first batch) for the optimiser; the saved transcoders
take raw MLP inputs and write raw MLP outputs with unit-norm decoder rows (the scales folded into the
encoder and the biases). Objectives are ``sae train``'s (TopK + AuxK, BatchTopK; ``objectives``
with a target).

The job checkpoints every ``checkpoint_every`` steps (every layer's weights, Adam state, dead counters,
scales and the windows consumed) and ``--resume`` continues from there; a progress bar shows tokens.
Tokens of consecutive steps come from the same shuffled windows: there is no shuffle buffer across
batches here, to keep memory at one batch of all layers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saescope.activations.read import hooks_activations
from saescope.corpus import load_corpus, token_windows
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel, load_model
from saescope.sae.core import ACTIVATIONS, SAE
from saescope.sae.objectives import ThresholdTracker, objective, unit_decoder_step
from saescope.sae.transcoders import INPUT_HOOK, OUTPUT_HOOK, TranscoderSet, make_transcoder
from saescope.storage import Checkpoint


@dataclass
class TranscoderConfig:
    """What ``saescope transcoders train`` trains."""

    layers: list[int] | None = None
    """Layers to train a transcoder for; None: every layer (circuit-tracer needs 0 … n − 1)."""
    features: int = 2304
    """Features per transcoder (d_transcoder)."""
    activation: str = "topk"
    """topk | batchtopk | relu | jumprelu."""
    k: int = 32
    """Active features per token (topk, batchtopk)."""
    skip: bool = True
    """Add a linear skip connection from MLP input to output (skip transcoders; Paulo et al. 2025). At equal
    width, k and tokens it halves the CE cost of replacing every MLP (docs/guides/attribution_graphs.md)."""
    tokens: int = 1_000_000
    """Training tokens (every layer sees each of them once)."""
    lr: float | None = None
    """Learning rate; default 2e-4 / sqrt(features / 16384), as sae train."""
    context: int = 128
    """Tokens per window of the corpus."""
    model_batch: int = 8
    """Windows per forward pass; each pass is one optimizer step of every layer."""
    auxk_coeff: float = 1 / 32
    """Weight of the AuxK loss on dead latents (topk, batchtopk)."""
    dead_after_tokens: int = 250_000
    """A latent that has not fired for this many tokens counts as dead (for AuxK)."""
    corpus: str = "embedded"
    """'embedded' (its train split), or a .txt / .jsonl file."""
    model: str | None = None
    """Hub id or local folder of the model; default: the embedded model."""
    seed: int = 0
    """Seed of the corpus shuffle and the initialisation."""
    dtype: str = "auto"
    """Precision of the model's forward pass (auto: bfloat16 only where it is faster)."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, mps."""
    checkpoint_every: int = 100
    """Steps between checkpoints (resume with --resume)."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise SaescopeError(f"unknown activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}")
        for name in ("features", "tokens", "context", "model_batch", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise SaescopeError(f"{name} must be positive, got {getattr(self, name)}")
        if self.activation in ("topk", "batchtopk") and not 0 < self.k <= self.features:
            raise SaescopeError(f"k must be in 1..features, got {self.k}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise SaescopeError(f"lr must be a positive number, got {self.lr}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.features / 16384)


def check_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    """The layers to train (all when ``None``), each checked against the model."""
    chosen = list(range(n_layers)) if layers is None else sorted(set(layers))
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad or not chosen:
        raise SaescopeError(f"layer {bad[0] if bad else '(none)'} is out of range: the model has {n_layers} layers "
                            f"(0-{n_layers - 1})")
    return chosen


def parse_layers(text: str) -> list[int] | None:
    """``all`` → None; ``0,3,5`` or ``0-5`` → the list."""
    if text.strip() == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            layers += list(range(int(first), int(last) + 1)) if last else [int(first)]
    except ValueError:
        raise SaescopeError(f"--layers must be 'all', '0,3,5' or '0-5', got {text!r}") from None
    return layers


def train_transcoders(config: TranscoderConfig, out: str | Path, resume: bool = False, lm: LoadedModel | None = None,
                      progress: bool = True) -> TranscoderSet:
    """Train and save (``out``, circuit-tracer's layout) a transcoder per layer; returns the set."""
    out = Path(out)
    settings = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_every", "device")}
    checkpoint = Checkpoint(out, finished="config.yaml", settings=settings)
    checkpoint.guard(resume)
    lm = lm or load_model(config.model, device=config.device, dtype=config.dtype)
    layers = check_layers(config.layers, lm.n_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        saes = {layer: make_transcoder(layer, lm.d_model, config.features, config.activation, config.k, lm.name,
                                       config.skip).to(lm.device) for layer in layers}
    loop = _Loop(config, lm, saes, checkpoint)
    if resume:
        loop.restore()
    loop.run(progress)
    record = {"train_config": asdict(config), "trained_tokens": loop.tokens, "train_seconds": round(loop.elapsed, 1),
              "model": lm.name, "input_hook": INPUT_HOOK, "output_hook": OUTPUT_HOOK}
    result = TranscoderSet(loop.folded(), lm.name, record)
    result.save(out)
    checkpoint.clear()
    return result


class _Loop:
    def __init__(self, config: TranscoderConfig, lm: LoadedModel, saes: dict[int, SAE], checkpoint: Checkpoint) -> None:
        self.config, self.lm, self.saes, self.checkpoint = config, lm, saes, checkpoint
        self.optimizers = {layer: torch.optim.Adam(sae.parameters(), lr=config.learning_rate, eps=6.25e-10)
                           for layer, sae in saes.items()}
        self.dead = {layer: torch.zeros(config.features, dtype=torch.long, device=lm.device) for layer in saes}
        self.thresholds = {layer: ThresholdTracker() for layer in saes}
        self.scales: dict[int, tuple[float, float]] = {}
        self.step, self.tokens, self.windows, self.elapsed = 0, 0, 0, 0.0
        self.hooks = [h.format(layer=layer) for layer in saes for h in (INPUT_HOOK, OUTPUT_HOOK)]

    def run(self, progress: bool) -> None:
        cfg = self.config
        docs = load_corpus(cfg.corpus, "train")
        bar = tqdm(total=cfg.tokens, initial=self.tokens, unit="tok", desc=f"transcoders x{len(self.saes)}",
                   disable=not progress)
        started = time.perf_counter() - self.elapsed
        for ids in self._batches(docs):
            with torch.no_grad():
                captured = hooks_activations(self.lm, self.hooks, ids.to(self.lm.device))
            self.windows += len(ids)
            n = self._train_step(captured)
            self.tokens += n
            bar.update(n)
            self.elapsed = time.perf_counter() - started
            if self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if self.tokens >= cfg.tokens:
                break
        bar.close()

    def _batches(self, docs: list) -> Iterator[torch.Tensor]:
        """Batches of windows from ``self.windows`` on; the corpus is cycled, reshuffled each time (as
        ``activations.stream.ModelActivations`` does, a cycle's length taken from the first shuffle), so a run
        may ask for more tokens than the corpus holds."""
        cfg, tokenizer = self.config, self.lm.tokenizer
        per_cycle = sum(1 for _ in token_windows(tokenizer, docs, cfg.context, cfg.seed))
        if per_cycle == 0:
            raise SaescopeError("the corpus gave no tokens to train on")
        batch: list[torch.Tensor] = []
        position = self.windows
        while True:
            cycle, offset = divmod(position, per_cycle)
            for window in token_windows(tokenizer, docs, cfg.context, cfg.seed + cycle, offset):
                batch.append(window)
                position += 1
                if len(batch) == cfg.model_batch:
                    yield torch.stack(batch)
                    batch = []

    def _train_step(self, captured: dict) -> int:
        cfg, n = self.config, 0
        for layer, sae in self.saes.items():
            x, keep_in = captured[INPUT_HOOK.format(layer=layer)]
            y, keep_out = captured[OUTPUT_HOOK.format(layer=layer)]
            keep = keep_in & keep_out  # a sink on neither side of the MLP (transcoder_eval.kept)
            x, y = x[keep].float(), y[keep].float()
            if layer not in self.scales:
                d = x.shape[-1]
                self.scales[layer] = (float(d ** 0.5 / x.norm(dim=-1).mean()), float(d ** 0.5 / y.norm(dim=-1).mean()))
            sx, sy = self.scales[layer]
            result = objective(sae, x * sx, self.dead[layer] > cfg.dead_after_tokens, 0.0, cfg.auxk_coeff,
                               threshold=self.thresholds[layer], target=y * sy)
            unit_decoder_step(sae, self.optimizers[layer], result.loss)
            with torch.no_grad():
                self.dead[layer] += len(x)
                self.dead[layer][result.fired] = 0
            n = len(x)
        self.step += 1
        return n

    def folded(self) -> dict[int, SAE]:
        """Copies that take raw MLP inputs and write raw MLP outputs (scales folded in)."""
        out = {}
        for layer, sae in self.saes.items():
            copy = make_transcoder(layer, sae.d_in, sae.d_sae, sae.cfg.activation, sae.cfg.k, self.lm.name, sae.cfg.skip)
            copy.load_state_dict(sae.state_dict())
            sx, sy = self.scales.get(layer, (1.0, 1.0))
            with torch.no_grad():  # f' = f / sy: pre-activations and thresholds shrink by sy, x by sx
                copy.W_enc.mul_(sx / sy)
                if copy.W_skip is not None:  # sy·y ≈ (sx·x) @ W_skip  ⇒  y ≈ x @ (W_skip·sx/sy)
                    copy.W_skip.mul_(sx / sy)
                copy.b_enc.div_(sy)
                copy.b_dec.div_(sy)
                if copy.threshold is not None:
                    copy.threshold.div_(sy)
            out[layer] = copy.cpu().eval().requires_grad_(False)
        return out

    def save_checkpoint(self) -> None:
        tensors = {}
        for layer, sae in self.saes.items():
            tensors |= {f"{layer}.sae.{name}": p.detach().cpu() for name, p in sae.named_parameters()}
            tensors[f"{layer}.dead"] = self.dead[layer].cpu()
            for index, state in self.optimizers[layer].state_dict()["state"].items():
                tensors |= {f"{layer}.optimizer.{index}.{key}": torch.as_tensor(value).cpu() for key, value in state.items()}
        info = {"step": self.step, "tokens": self.tokens, "windows": self.windows, "elapsed": self.elapsed,
                "scales": {str(k): v for k, v in self.scales.items()},
                "threshold_steps": {str(k): t.steps for k, t in self.thresholds.items()}}
        self.checkpoint.save(tensors, info)

    def restore(self) -> None:
        tensors, info = self.checkpoint.load()
        self.step, self.tokens, self.windows, self.elapsed = info["step"], info["tokens"], info["windows"], info["elapsed"]
        self.scales = {int(k): tuple(v) for k, v in info["scales"].items()}
        for layer, sae in self.saes.items():
            with torch.no_grad():
                for name, p in sae.named_parameters():
                    p.copy_(tensors[f"{layer}.sae.{name}"])
            self.dead[layer].copy_(tensors[f"{layer}.dead"])
            self.thresholds[layer].steps = info["threshold_steps"][str(layer)]
            optimizer = self.optimizers[layer]
            state = optimizer.state_dict()
            for index in range(len(list(sae.parameters()))):
                prefix = f"{layer}.optimizer.{index}."
                found = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
                if found:
                    state["state"][index] = found
            optimizer.load_state_dict(state)

