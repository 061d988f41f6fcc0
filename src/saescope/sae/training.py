"""Train an SAE on a hook point's activations streamed from the model (``saescope sae train``).

Adam, unit-norm decoder rows (with the gradient component along each row removed), linear LR
warm-up then linear decay over the last ``decay_fraction`` of steps, AuxK for dead TopK latents.
Inputs are scaled so their mean norm is sqrt(d_in) during training; the scale is folded into the
saved weights, so the saved SAE takes raw activations and its decoder rows stay unit-norm.

With ``epochs > 1`` the first pass writes the activations to disk shards and later passes replay
them without the model. Checkpoints (``OUT/checkpoint/``, ``storage.Checkpoint``) are written every
``checkpoint_every`` steps and on Ctrl-C; ``resume=True`` continues from the last one. A finished
run deletes its checkpoint, and its activation shards unless ``keep_activations``. On resume,
windows that sat in the shuffle buffer at checkpoint time are not revisited in the first pass (they
are in the disk shards if ``epochs > 1``). So a resumed run is not bit-identical to an uninterrupted one
(the rest of the stream comes in another order); ``--resume`` refuses a checkpoint whose settings differ.

Under ``torchrun`` (``--workers N``) training is data-parallel over cached activations
(``sae.data_parallel``): rank 0 writes the log, checkpoints and the SAE; ``--resume`` reloads rank 0's
checkpoint on every rank.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saescope.activations.layout import check_cache_fits, shard_files
from saescope.activations.stream import ModelActivations, ShardWriter, replay_shards, shuffled_batches, tee_to_shards
from saescope.corpus import load_corpus
from saescope.errors import JobInterrupted, SaescopeError
from saescope.interrupts import deferred_interrupt
from saescope.model.hooks import resolve_hook
from saescope.model.loading import LoadedModel, load_model
from saescope.parallel.context import distributed_context
from saescope.precision import dtype_name, resolve_dtype
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.data_parallel import DataParallel
from saescope.sae.evaluation import log_heldout
from saescope.sae.formats import save_sae
from saescope.sae.objectives import BatchShare, ThresholdTracker, objective, unit_decoder_step
from saescope.sae.train_config import TrainConfig
from saescope.storage import RESUME_HINT, Checkpoint, write_json

__all__ = ["TrainConfig", "train_sae"]


@dataclass
class _State:
    step: int = 0
    windows_consumed: int = 0
    input_scale: float = 0.0
    elapsed: float = 0.0
    batchtopk_steps: int = 0


def train_sae(config: TrainConfig, out: str | Path, resume: bool = False, lm: LoadedModel | None = None,
              progress: bool = True) -> SAE:
    """Train an SAE as ``config`` says and save it to ``out`` (SAELens format). Returns it.

    Example::

        sae = train_sae(TrainConfig(hook="blocks.6.hook_resid_post", features=1024, k=16,
                                    tokens=200_000), "my_sae")
    """
    out = Path(out)
    ctx = distributed_context(config.device)
    parallel = DataParallel(ctx, config.batch_size, config.activation, config.activations is not None)
    resumable = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_every", "log_every", "device",
                                                                        "keep_activations", "eval_every", "eval_tokens")}
    checkpoint = Checkpoint(out, finished="cfg.json", settings=resumable)
    checkpoint.guard(resume)
    ctx.barrier()  # every rank has checked the folder before rank 0 writes to it
    lm = lm or load_model(config.model, device=ctx.device(config.device), dtype=config.dtype)
    resolve_hook(lm.model, config.hook)
    if config.activations is not None:
        check_cache_fits(config.activations, lm.name, config.hook, lm.d_model)
    with torch.random.fork_rng(devices=[]):  # the same initial weights for a seed, on every rank
        torch.manual_seed(config.seed)
        sae = SAE(SAEConfig(lm.d_model, config.features, config.activation, config.k, config.hook, lm.name))
    sae = sae.to(lm.device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.learning_rate, betas=(0.9, 0.999), eps=6.25e-10)
    dead_counter = torch.zeros(config.features, dtype=torch.long, device=lm.device)
    state = _load_checkpoint(checkpoint, sae, optimizer, dead_counter) if resume else _State()
    if ctx.is_main:
        write_json(out / "train_config.json", asdict(config))
    loop = _TrainLoop(config, lm, sae, optimizer, dead_counter, state, checkpoint, parallel)
    loop.run(progress and ctx.is_main)
    final = loop.snapshot()
    final.cfg.metadata.update(trained_tokens=state.step * config.batch_size, input_scale=state.input_scale,
                              train_seconds=round(state.elapsed, 1), train_config=asdict(config),
                              train_dtype=dtype_name(loop.compute_dtype), workers=ctx.world_size)
    if ctx.is_main:
        save_sae(final, out)
    ctx.barrier()
    checkpoint.clear()
    if not config.keep_activations:
        shutil.rmtree(out / "activations", ignore_errors=True)
    return final.eval().requires_grad_(False)


class _TrainLoop:
    def __init__(self, config: TrainConfig, lm: LoadedModel, sae: SAE, optimizer: torch.optim.Optimizer,
                 dead_counter: torch.Tensor, state: _State, checkpoint: Checkpoint, parallel: DataParallel) -> None:
        self.config, self.lm, self.sae, self.optimizer, self.parallel = config, lm, sae, optimizer, parallel
        self.dead_counter, self.state, self.checkpoint = dead_counter, state, checkpoint
        self.out = checkpoint.out
        self.shards = self.out / "activations"
        self.writer = ShardWriter(self.shards) if config.epochs > 1 and config.activations is None else None
        self.source: ModelActivations | None = None
        self.threshold = ThresholdTracker(state.batchtopk_steps)
        self.compute_dtype = resolve_dtype(config.dtype, lm.device)
        self.bar: tqdm | None = None
        self.interrupted: Callable[[], bool] = lambda: False
        self.started = time.perf_counter()  # minus the elapsed time of earlier runs (set by run)

    def run(self, progress: bool) -> None:
        cfg, state = self.config, self.state
        self.bar = tqdm(total=cfg.total_steps, initial=state.step, disable=not progress, unit="step",
                        desc=f"train {cfg.activation} SAE")
        self.started = time.perf_counter() - state.elapsed
        log_path = self.out / "training_log.jsonl" if self.parallel.ctx.is_main else Path(os.devnull)
        with deferred_interrupt() as local_interrupt, log_path.open("a") as log:
            interrupted = self.interrupted = lambda: self.parallel.any_rank(local_interrupt())
            try:
                for x in self._batches():
                    if state.step >= cfg.total_steps or interrupted():
                        break
                    self._train_on(x, log)
            except _StopFilling:
                pass
            self.bar.close()
            if state.step < cfg.total_steps and interrupted():
                self._checkpoint()
                raise JobInterrupted(f"interrupted at step {state.step} of {cfg.total_steps}: checkpoint saved in "
                                     f"{self.checkpoint.folder}; resume with the same settings ({RESUME_HINT})")
        if state.step < cfg.total_steps:
            raise SaescopeError(f"the corpus ran out after {state.step} of {cfg.total_steps} steps")

    def _train_on(self, x: torch.Tensor, log: object) -> None:
        cfg, state = self.config, self.state
        if state.input_scale == 0.0:
            self._initialize(x)
        metrics = self._step(*self.parallel.share(x * state.input_scale))
        state.step += 1
        state.elapsed = time.perf_counter() - self.started
        self.bar.set_description(f"train {cfg.activation} SAE")
        self.bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == cfg.total_steps:
            self.bar.set_postfix(l0=f"{metrics['l0']:.1f}", fvu=f"{metrics['fvu']:.3f}", dead=f"{metrics['dead']:.3f}")
            log.write(json.dumps({"step": state.step, "tokens": state.step * cfg.batch_size,
                                  "seconds": round(state.elapsed, 4), **metrics}) + "\n")
            log.flush()
        if cfg.eval_every and (state.step % cfg.eval_every == 0 or state.step == cfg.total_steps) and self.parallel.ctx.is_main:
            log_heldout(self.lm, self.snapshot().eval(), cfg.hook, cfg.eval_tokens,
                        {"step": state.step, "tokens": state.step * cfg.batch_size}, self.out / "heldout_log.jsonl")
        if state.step % cfg.checkpoint_every == 0 and state.step < cfg.total_steps:
            self._checkpoint()

    def snapshot(self) -> SAE:
        """A copy of the SAE as it would be saved now (input scale folded in: it takes raw activations)."""
        copy = SAE(self.sae.cfg)
        copy.load_state_dict(self.sae.state_dict())
        copy.fold_input_scale(self.state.input_scale)
        return copy.to(self.lm.device)

    def _show_fill(self, filled: int, target: int) -> None:
        if self.interrupted():
            raise _StopFilling
        if self.bar is not None and self.state.step == 0:
            self.bar.set_description(f"filling shuffle buffer {filled:,}/{target:,} tok")

    def _batches(self) -> Iterator[torch.Tensor]:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed + self.state.step)
        docs = load_corpus(cfg.corpus, split="train" if cfg.corpus == "embedded" else "all")
        if cfg.activations is not None:  # cached activations: no model, every pass a reshuffled replay
            chunks = _replay_forever(Path(cfg.activations), generator)
            return shuffled_batches(chunks, cfg.batch_size, cfg.shuffle_buffer, generator, on_fill=self._show_fill)
        unique_windows = math.ceil(cfg.tokens / cfg.epochs / (cfg.context - 1))
        self.source = ModelActivations(self.lm, cfg.hook, docs, cfg.context, cfg.model_batch, cfg.seed,
                                       start_window=self.state.windows_consumed)
        if self.writer is None:  # one epoch: stream (cycling the corpus if it is shorter than the run)
            chunks: Iterator[torch.Tensor] = iter(self.source)
        else:
            first_pass = tee_to_shards(_limit_windows(self.source, unique_windows), self.writer)
            chunks = _then_replay(first_pass, self.writer, self.shards, generator)
        return shuffled_batches(chunks, cfg.batch_size, cfg.shuffle_buffer, generator, on_fill=self._show_fill)

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        self.state.input_scale = float(x.shape[-1] ** 0.5 / x.norm(dim=-1).mean())
        self.sae.b_dec.copy_((x * self.state.input_scale).median(dim=0).values)

    def _step(self, x: torch.Tensor, share: BatchShare | None) -> dict[str, float]:
        cfg, sae = self.config, self.sae
        lr = cfg.learning_rate * _lr_factor(self.state.step, cfg.total_steps, cfg.warmup_steps, cfg.decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        dead = self.dead_counter > cfg.dead_after_tokens
        result = objective(sae, x, dead, cfg.sparsity_coeff, cfg.auxk_coeff, threshold=self.threshold,
                           compute_dtype=self.compute_dtype, share=share, matryoshka=cfg.matryoshka)
        unit_decoder_step(sae, self.optimizer, result.loss, lambda: self.parallel.sum_gradients(sae))
        with torch.no_grad():
            self.dead_counter += share.rows if share else len(x)
            self.dead_counter[result.fired] = 0
        loss = float(share.total(result.loss.detach().clone())) if share else float(result.loss.detach())
        return {"loss": loss, "fvu": result.fvu, "l0": result.l0, "lr": lr,
                "dead": float(dead.float().mean())}

    def _checkpoint(self) -> None:
        if not self.parallel.ctx.is_main:
            return
        if self.writer is not None:
            self.writer.flush()
        self.state.windows_consumed = self.source.windows_consumed if self.source else self.state.windows_consumed
        self.state.batchtopk_steps = self.threshold.steps
        tensors = {f"sae.{name}": p.detach().cpu() for name, p in self.sae.named_parameters()}
        tensors["dead_counter"] = self.dead_counter.cpu()
        opt_state = self.optimizer.state_dict()
        for index, param_state in opt_state["state"].items():
            for key, value in param_state.items():
                tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).cpu()
        self.checkpoint.save(tensors, {**asdict(self.state), "param_groups": opt_state["param_groups"]})


class _StopFilling(Exception):
    """Ctrl-C while the shuffle buffer fills: stop without waiting for the next step."""


def _limit_windows(source: ModelActivations, max_windows: int) -> Iterator[torch.Tensor]:
    for chunk in source:
        yield chunk
        if source.windows_consumed >= max_windows:
            return


def _then_replay(first_pass: Iterator[torch.Tensor], writer: ShardWriter, shards: Path,
                 generator: torch.Generator) -> Iterator[torch.Tensor]:
    """The first pass, then the cached shards again and again (the step count ends training)."""
    yield from first_pass
    writer.flush()
    while True:
        yield from replay_shards(shards, generator)


def _replay_forever(folder: Path, generator: torch.Generator) -> Iterator[torch.Tensor]:
    if not shard_files(folder):
        raise SaescopeError(f"{folder} holds no activation shards (shard_*.safetensors): cache them first "
                            "(saescope sae train-suite, or saescope.activations.cache.cache_activations)")
    while True:
        yield from replay_shards(folder, generator)


def _lr_factor(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    decay_start = int(total * (1 - decay_fraction))
    decay = 1.0 if step < decay_start else max(0.0, (total - step) / max(1, total - decay_start))
    return warm * decay


def _load_checkpoint(checkpoint: Checkpoint, sae: SAE, optimizer: torch.optim.Optimizer,
                     dead_counter: torch.Tensor) -> _State:
    tensors, info = checkpoint.load()
    try:
        with torch.no_grad():
            for name, param in sae.named_parameters():
                param.copy_(tensors[f"sae.{name}"])
            dead_counter.copy_(tensors["dead_counter"])
        param_groups = info.pop("param_groups")
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
        return _State(**info)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise SaescopeError(f"the checkpoint in {checkpoint.folder} does not fit this run ({type(exc).__name__}): "
                            "resume with the same settings, or delete it to start over") from None
