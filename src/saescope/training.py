"""Train an SAE on a hook point's activations streamed from the model (``saescope sae train``).

Adam, unit-norm decoder rows (with the gradient component along each row removed), linear LR
warm-up then linear decay over the last ``decay_fraction`` of steps, AuxK for dead TopK latents.
Inputs are scaled so their mean norm is sqrt(d_in) during training; the scale is folded into the
saved weights, so the saved SAE takes raw activations and its decoder rows stay unit-norm.

With ``epochs > 1`` the first pass writes the activations to disk shards and later passes replay
them without the model. Checkpoints (``OUT/checkpoint/``, safetensors + JSON, atomic) are written
every ``checkpoint_every`` steps; ``resume=True`` continues from the last one. A finished run
deletes its checkpoint, and its activation shards unless ``keep_activations``. On resume, windows
that sat in the shuffle buffer at checkpoint time are not revisited in the first pass (they are in
the disk shards if ``epochs > 1``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saescope.activations import ModelActivations, ShardWriter, replay_shards, shuffled_batches, tee_to_shards
from saescope.corpus import load_corpus
from saescope.errors import SaescopeError
from saescope.hooks import resolve_hook
from saescope.models import LoadedModel, load_model
from saescope.sae import SAE, SAEConfig
from saescope.sae_io import save_sae
from saescope.sae_objectives import objective
from saescope.storage import atomic_path, write_json


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``OUT/train_config.json``."""

    hook: str = "blocks.12.hook_resid_post"
    model: str | None = None
    features: int = 4608
    activation: str = "topk"
    k: int | None = 32
    tokens: int = 2_000_000
    batch_size: int = 2048
    lr: float | None = None  # default: 2e-4 / sqrt(features / 16384) (Gao et al.)
    warmup_steps: int = 200
    decay_fraction: float = 0.2
    sparsity_coeff: float = 0.0
    auxk_coeff: float = 1 / 32
    dead_after_tokens: int = 250_000
    context: int = 128
    model_batch: int = 16
    buffer_tokens: int = 262_144
    epochs: int = 1
    corpus: str = "embedded"
    seed: int = 0
    dtype: str = "bfloat16"
    device: str = "cpu"
    checkpoint_every: int = 250
    log_every: int = 25
    keep_activations: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokens <= 0 or self.batch_size <= 0 or self.features <= 0:
            raise SaescopeError("--tokens, --batch-size and --features must be positive")
        if self.epochs < 1:
            raise SaescopeError("--epochs must be at least 1")
        if self.activation in ("topk", "batchtopk") and not self.k:
            raise SaescopeError(f"{self.activation} needs --k")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.features / 16384)

    @property
    def total_steps(self) -> int:
        return max(1, self.tokens // self.batch_size)


@dataclass
class _State:
    step: int = 0
    windows_consumed: int = 0
    input_scale: float = 0.0
    elapsed: float = 0.0


def train_sae(config: TrainConfig, out: str | Path, resume: bool = False, lm: LoadedModel | None = None,
              progress: bool = True) -> SAE:
    """Train an SAE as ``config`` says and save it to ``out`` (SAELens format). Returns it.

    Example::

        sae = train_sae(TrainConfig(hook="blocks.6.hook_resid_post", features=1024, k=16,
                                    tokens=200_000), "my_sae")
    """
    out = Path(out)
    ckpt = out / "checkpoint"
    if resume and not (ckpt / "state.json").exists():
        raise SaescopeError(f"nothing to resume: {ckpt} has no checkpoint")
    if not resume and (ckpt / "state.json").exists():
        raise SaescopeError(f"{out} already holds a checkpoint: pass --resume to continue it, or pick a new --out")
    lm = lm or load_model(config.model, device=config.device, dtype=config.dtype)
    resolve_hook(lm.model, config.hook)
    sae = SAE(SAEConfig(lm.d_model, config.features, config.activation, config.k, config.hook, lm.name))
    sae.to(lm.device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.learning_rate, betas=(0.9, 0.999), eps=6.25e-10)
    dead_counter = torch.zeros(config.features, dtype=torch.long, device=lm.device)
    state = _State()
    if resume:
        state = _load_checkpoint(ckpt, sae, optimizer, dead_counter)
    write_json(out / "train_config.json", asdict(config))
    loop = _TrainLoop(config, lm, sae, optimizer, dead_counter, state, out)
    loop.run(progress)
    final = SAE(sae.cfg)
    final.load_state_dict(sae.state_dict())
    final.fold_input_scale(state.input_scale)
    final.cfg.metadata.update(trained_tokens=state.step * config.batch_size, input_scale=state.input_scale,
                              train_seconds=round(state.elapsed, 1), train_config=asdict(config))
    save_sae(final, out)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    if not config.keep_activations:
        shutil.rmtree(out / "activations", ignore_errors=True)
    return final.eval().requires_grad_(False)


class _TrainLoop:
    def __init__(self, config: TrainConfig, lm: LoadedModel, sae: SAE, optimizer: torch.optim.Optimizer,
                 dead_counter: torch.Tensor, state: _State, out: Path) -> None:
        self.config, self.lm, self.sae, self.optimizer = config, lm, sae, optimizer
        self.dead_counter, self.state, self.out = dead_counter, state, out
        self.shards = out / "activations"
        self.writer = ShardWriter(self.shards) if config.epochs > 1 else None
        self.source: ModelActivations | None = None

    def run(self, progress: bool) -> None:
        cfg, state = self.config, self.state
        bar = tqdm(total=cfg.total_steps, initial=state.step, disable=not progress, unit="step",
                   desc=f"train {cfg.activation} SAE")
        log = (self.out / "training_log.jsonl").open("a")
        started = time.perf_counter() - state.elapsed
        for x in self._batches():
            if state.step >= cfg.total_steps:
                break
            if state.input_scale == 0.0:
                self._initialize(x)
            metrics = self._step(x * state.input_scale)
            state.step += 1
            state.elapsed = time.perf_counter() - started
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == cfg.total_steps:
                bar.set_postfix(l0=f"{metrics['l0']:.1f}", fvu=f"{metrics['fvu']:.3f}", dead=f"{metrics['dead']:.3f}")
                log.write(json.dumps({"step": state.step, "tokens": state.step * cfg.batch_size, **metrics}) + "\n")
                log.flush()
            if state.step % cfg.checkpoint_every == 0 and state.step < cfg.total_steps:
                self._checkpoint()
        bar.close()
        log.close()
        if state.step < cfg.total_steps:
            raise SaescopeError(f"the corpus ran out after {state.step} of {cfg.total_steps} steps")

    def _batches(self):  # noqa: ANN202 - an iterator of [batch, d_in] tensors
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed + self.state.step)
        docs = load_corpus(cfg.corpus, split="train")
        per_window = cfg.context - 1
        unique_windows = math.ceil(cfg.tokens / cfg.epochs / per_window)
        self.source = ModelActivations(self.lm, cfg.hook, docs, cfg.context, cfg.model_batch, cfg.seed,
                                       start_window=self.state.windows_consumed)
        if self.writer is None:  # one epoch: stream (cycling the corpus if it is shorter than --tokens)
            return shuffled_batches(iter(self.source), cfg.batch_size, cfg.buffer_tokens, generator)
        first_pass = tee_to_shards(_limit_windows(self.source, unique_windows), self.writer)
        return shuffled_batches(_then_replay(first_pass, self.writer, self.shards, generator),
                                cfg.batch_size, cfg.buffer_tokens, generator)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        self.state.input_scale = float(x.shape[-1] ** 0.5 / x.norm(dim=-1).mean())
        self.sae.b_dec.copy_((x * self.state.input_scale).median(dim=0).values)

    def _step(self, x: torch.Tensor) -> dict[str, float]:
        cfg, sae = self.config, self.sae
        lr = cfg.learning_rate * _lr_factor(self.state.step, cfg.total_steps, cfg.warmup_steps, cfg.decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        dead = self.dead_counter > cfg.dead_after_tokens
        result = objective(sae, x, dead, cfg.sparsity_coeff, cfg.auxk_coeff)
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        with torch.no_grad():
            directions = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
            sae.W_dec.grad -= (sae.W_dec.grad * directions).sum(-1, keepdim=True) * directions
        self.optimizer.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
            if sae.cfg.activation == "jumprelu":
                sae.threshold.clamp_(min=1e-6)
            self.dead_counter += len(x)
            self.dead_counter[result.fired] = 0
        return {"loss": float(result.loss.detach()), "fvu": result.fvu, "l0": result.l0, "lr": lr,
                "dead": float(dead.float().mean())}

    def _checkpoint(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        self.state.windows_consumed = self.source.windows_consumed if self.source else 0
        _save_checkpoint(self.out / "checkpoint", self.sae, self.optimizer, self.dead_counter, self.state)


def _limit_windows(source: ModelActivations, max_windows: int):  # noqa: ANN202
    for chunk in source:
        yield chunk
        if source.windows_consumed >= max_windows:
            return


def _then_replay(first_pass, writer: ShardWriter, shards: Path, generator: torch.Generator):  # noqa: ANN202
    """The first pass, then the cached shards again and again (the step count ends training)."""
    yield from first_pass
    writer.flush()
    while True:
        yield from replay_shards(shards, generator)


def _lr_factor(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    decay_start = int(total * (1 - decay_fraction))
    decay = 1.0 if step < decay_start else max(0.0, (total - step) / max(1, total - decay_start))
    return warm * decay


def _save_checkpoint(folder: Path, sae: SAE, optimizer: torch.optim.Optimizer, dead_counter: torch.Tensor,
                     state: _State) -> None:
    tensors = {f"sae.{name}": p.detach().cpu().contiguous() for name, p in sae.named_parameters()}
    tensors["dead_counter"] = dead_counter.cpu()
    opt_state = optimizer.state_dict()
    for index, param_state in opt_state["state"].items():
        for key, value in param_state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / "state.safetensors"))
        extra = {"batchtopk_steps": getattr(sae, "batchtopk_steps", 0)}
        (tmp / "state.json").write_text(json.dumps({**asdict(state), **extra,
                                                    "param_groups": opt_state["param_groups"]}, indent=2))


def _load_checkpoint(folder: Path, sae: SAE, optimizer: torch.optim.Optimizer,
                     dead_counter: torch.Tensor) -> _State:
    try:
        tensors = load_file(str(folder / "state.safetensors"))
        info = json.loads((folder / "state.json").read_text())
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same user problem
        raise SaescopeError(f"checkpoint in {folder} is unreadable ({type(exc).__name__}); "
                            "delete it to start over") from None
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(tensors[f"sae.{name}"])
        dead_counter.copy_(tensors["dead_counter"])
    sae.batchtopk_steps = info.pop("batchtopk_steps", 0)
    param_groups = info.pop("param_groups")
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
    return _State(**info)
