"""One streaming pass of model + SAE over a corpus -> a features RUN folder (``saescope features extract``).

The model runs only up to the SAE's hook; activations are encoded and folded into a
``FeatureAccumulator`` batch by batch, so memory does not grow with the corpus. Every
``checkpoint_every`` batches, and on Ctrl-C, the accumulator is saved (``RUN/checkpoint/``,
``storage.Checkpoint``); ``resume=True`` continues from it and gives the same result as an
uninterrupted run (the window order is fixed). The run is complete when ``RUN/manifest.json``
exists; it is written last.

Under ``torchrun`` (``--workers N``), batch ``b`` of windows goes to rank ``b mod N``: every rank sees
the same batches a single process would, accumulates its own, and checkpoints to
``RUN/checkpoint-rankR-of-N/``; at the end the accumulators are gathered and merged exactly
(``features.merge``) and rank 0 writes the RUN. ``--resume`` needs the same N.

With ``activations=`` (``--activations``) the windows and their activations come from an activation
cache (``activations.windows``) instead of the model: the same windows, the activations as cached
(bfloat16), so a RUN costs one SAE encode per token and the model forward is paid once for many SAEs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from saescope.activations.read import hook_activations
from saescope.activations.windows import CachedWindows, WindowBatch
from saescope.corpus import load_corpus, windows_with_sources
from saescope.errors import JobInterrupted, SaescopeError
from saescope.features.accumulator import FeatureAccumulator
from saescope.features.config import ExtractConfig
from saescope.features.merge import merge_states
from saescope.features.run import FeatureRun, write_run
from saescope.interrupts import deferred_interrupt
from saescope.model.loading import LoadedModel
from saescope.parallel.collectives import all_gather_state
from saescope.parallel.context import DistContext, distributed_context
from saescope.precision import dtype_name
from saescope.sae.core import SAE, sae_fingerprint
from saescope.storage import RESUME_HINT, Checkpoint


def extract_features(lm: LoadedModel, sae: SAE, out: str | Path, config: ExtractConfig | None = None, *,
                     resume: bool = False, progress: bool = True, sae_name: str = "default",
                     **fields: Any) -> FeatureRun:
    """Run ``lm`` + ``sae`` over a corpus as ``config`` says (keyword ``fields`` override it) and
    write the RUN folder ``out``.

    Example::

        run = extract_features(lm, load_sae("default"), "runs/default", tokens=200_000)
        run.stats.sort_values("max", ascending=False).head()
    """
    try:
        config = replace(config or ExtractConfig(), **fields)
    except TypeError as exc:
        raise SaescopeError(f"unknown extraction setting: {exc}") from None
    hook = lm.check_sae(sae, config.hook)
    ctx = distributed_context(lm.device.type)
    name = f"checkpoint-rank{ctx.rank}-of-{ctx.world_size}" if ctx.distributed else "checkpoint"
    # --tokens is a budget (a resumed run may extend it); everything else decides what is accumulated
    settings = {**{k: v for k, v in asdict(config).items() if k not in ("checkpoint_every", "tokens")}, "hook": hook,
                "dtype": dtype_name(lm.dtype), "model": lm.name}
    checkpoint = Checkpoint(out, finished="manifest.json", name=name, settings=settings)
    peers_saved = ctx.distributed and any(Path(out).glob(f"checkpoint-rank*-of-{ctx.world_size}/state.json"))
    if resume and peers_saved and not checkpoint.exists():
        resume = False  # this rank had saved nothing yet; its batches are its own, so it starts them over
    else:
        checkpoint.guard(resume)
    ctx.barrier()  # every rank has checked the folder before any writes to it
    split = "train" if config.corpus == "embedded" else "all"
    docs = load_corpus(config.corpus, split)
    acc = FeatureAccumulator(sae.d_sae, len(lm.tokenizer), top_k=config.top_k)
    windows_done = _load_checkpoint(checkpoint, acc, sae) if resume else 0
    source = _window_source(lm, hook, docs, config, windows_done)
    n_windows = math.ceil(config.tokens / config.context)
    if isinstance(source, CachedWindows):
        n_windows = min(n_windows, source.n_windows)
    started = time.perf_counter()
    windows_done = _stream(lm, sae, hook, source, n_windows, config, acc, checkpoint, windows_done,
                           progress and ctx.is_main, ctx)
    if windows_done == 0:
        raise SaescopeError(f"corpus {config.corpus!r} has fewer than {config.context} tokens")
    merge_started = time.perf_counter()
    acc.state = merge_states(all_gather_state(ctx, acc.state_dict()))
    merge_seconds = time.perf_counter() - merge_started
    manifest = {"model": lm.name, "sae": sae_name, "sae_fingerprint": sae_fingerprint(sae), "hook": hook,
                "d_sae": sae.d_sae, "corpus": config.corpus, "split": split, "context": config.context,
                "top_k": config.top_k, "windows": windows_done, "tokens_requested": config.tokens,
                "tokens": int(acc.state["n_tokens"]), "seconds": round(time.perf_counter() - started, 1),
                "dtype": dtype_name(lm.dtype), "workers": ctx.world_size,
                "merge_seconds": round(merge_seconds, 3), "config": asdict(config)}
    if isinstance(source, CachedWindows):
        manifest["activations"], manifest["activations_dtype"] = str(config.activations), source.dtype
    if ctx.is_main:
        write_run(Path(out), acc, lm, sae, docs, manifest)
    ctx.barrier()  # the RUN is complete before any rank drops its checkpoint
    checkpoint.clear()
    return FeatureRun.load(out)


class ModelWindows:
    """The corpus windows (token ids and sources) from window ``start`` on; the activations are computed
    later, by ``encode_batch``, for this rank's batches only."""

    def __init__(self, tokenizer: object, docs: list, context: int, start: int) -> None:
        self.windows = windows_with_sources(tokenizer, docs, context, seed=0, start=start)

    def take(self, n: int, with_acts: bool = False) -> WindowBatch | None:
        batch = list(islice(self.windows, n))
        if not batch:
            return None
        return WindowBatch(torch.stack([ids for ids, _ in batch]), torch.stack([src for _, src in batch]), None, None)


def _window_source(lm: LoadedModel, hook: str, docs: list, config: ExtractConfig,
                   start: int) -> ModelWindows | CachedWindows:
    if config.activations is None:
        return ModelWindows(lm.tokenizer, docs, config.context, start)
    cached = CachedWindows(config.activations, lm.name, hook, lm.d_model, start=start)
    for name, theirs, ours in (("context", cached.context, config.context), ("corpus", cached.corpus, config.corpus)):
        if theirs != ours:
            raise SaescopeError(f"{config.activations} caches windows with {name} {theirs!r}, not {ours!r}: "
                                f"pass --{name} {theirs}")
    return cached


def _stream(lm: LoadedModel, sae: SAE, hook: str, source: ModelWindows | CachedWindows, n_windows: int,
            config: ExtractConfig, acc: FeatureAccumulator, checkpoint: Checkpoint, windows_done: int,
            progress: bool, ctx: DistContext) -> int:
    """Encode this rank's batches of windows into ``acc`` from window ``windows_done`` on; checkpoints as
    it goes and, after the batch under way, on Ctrl-C (``interrupts.deferred_interrupt``)."""
    bar = tqdm(total=n_windows * config.context, initial=windows_done * config.context, unit="tok",
               unit_scale=True, disable=not progress, desc="extract features")
    since_checkpoint = 0
    with deferred_interrupt() as interrupted:
        while windows_done < n_windows and not interrupted():
            mine = (windows_done // config.batch_size) % ctx.world_size == ctx.rank
            batch = source.take(min(config.batch_size, n_windows - windows_done), with_acts=mine)
            if batch is None:
                break
            if mine and batch.acts is None:
                encode_batch(lm, sae, hook, batch.ids.to(lm.device), batch.sources, acc, windows_done)
            elif mine:
                encode_activations(sae, batch.acts, batch.keep, batch.ids, batch.sources, acc, windows_done)
            windows_done += len(batch.ids)
            bar.update(len(batch.ids) * config.context)
            since_checkpoint += mine
            if since_checkpoint >= config.checkpoint_every and windows_done < n_windows:
                _save_checkpoint(checkpoint, acc, windows_done, sae)
                since_checkpoint = 0
        bar.close()
        if windows_done < n_windows and interrupted():
            _save_checkpoint(checkpoint, acc, windows_done, sae)
            raise JobInterrupted(f"interrupted after {windows_done * config.context:,} of "
                                 f"{n_windows * config.context:,} tokens: checkpoint saved in {checkpoint.folder}; "
                                 f"resume with the same settings ({RESUME_HINT})")
    return windows_done


@torch.no_grad()
def encode_batch(lm: LoadedModel, sae: SAE, hook: str, ids: torch.Tensor, sources: torch.Tensor,
                 acc: FeatureAccumulator, first_window: int) -> None:
    """Forward ``ids`` up to ``hook``, encode with ``sae`` and fold the features into ``acc``."""
    acts, keep = hook_activations(lm, hook, ids)  # [B, T, d_model], [B, T]
    encode_activations(sae, acts, keep, ids, sources, acc, first_window)


@torch.no_grad()
def encode_activations(sae: SAE, acts: torch.Tensor, keep: torch.Tensor, ids: torch.Tensor, sources: torch.Tensor,
                       acc: FeatureAccumulator, first_window: int) -> None:
    """Encode activations ``acts`` [B, T, d] (``keep`` [B, T] marks the real tokens) and fold them into ``acc``."""
    acts = acts.to(sae.W_enc.device, sae.W_enc.dtype)
    rows, features, values = sae.encode_sparse(acts.reshape(-1, acts.shape[-1]))
    acc.update_sparse(rows, features, values, ids, sources, keep, first_window)


def _save_checkpoint(checkpoint: Checkpoint, acc: FeatureAccumulator, windows_done: int, sae: SAE) -> None:
    checkpoint.save(acc.state_dict(), {"windows_done": windows_done, "sae_fingerprint": sae_fingerprint(sae)})


def _load_checkpoint(checkpoint: Checkpoint, acc: FeatureAccumulator, sae: SAE) -> int:
    state, progress = checkpoint.load()
    if progress.get("sae_fingerprint") != sae_fingerprint(sae):
        raise SaescopeError(f"{checkpoint.folder} was written with another SAE: choose another output folder")
    acc.load_state_dict(state)
    return int(progress["windows_done"])
