"""Run the model once over a corpus and cache the activations of several hook points on disk.

This is what makes ``sae train-suite`` cheap: the forward pass (the expensive part of SAE training
on a CPU) is shared by every hook point and every epoch. The cache is a folder per hook point of
bfloat16 safetensors shards (``stream.ShardWriter``), each with a window file naming the token ids and
corpus positions of its rows (``activations.windows``), plus ``progress.json``, the index: the model and its
width, the corpus, context and seed, the hook points, how many corpus windows and shards are complete
and the tokens per hook.
All writers are flushed together before the progress file is rewritten, so an interrupted run
resumes from a point where every hook's shards agree (shards written after it are deleted on resume).

Example::

    folder = cache_activations(lm, ["blocks.2.hook_resid_post", "blocks.6.hook_resid_post"],
                               tokens=200_000, folder="acts")
    # then TrainConfig(hook="blocks.6.hook_resid_post", activations="acts/blocks.6.hook_resid_post", ...)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saescope.activations.layout import PROGRESS_FILE, WINDOW_FILE, cached_tokens, shard_files
from saescope.activations.read import hooks_activations
from saescope.activations.stream import ShardWriter
from saescope.activations.windows import write_window_file
from saescope.corpus import load_corpus, windows_with_sources
from saescope.errors import JobInterrupted
from saescope.interrupts import deferred_interrupt
from saescope.model.hooks import resolve_hook
from saescope.model.loading import LoadedModel
from saescope.storage import RESUME_HINT, read_json, write_json


def cache_activations(lm: LoadedModel, hooks: list[str], tokens: int, folder: str | Path, corpus: str = "embedded",
                      context: int = 128, model_batch: int = 16, seed: int = 0, shard_tokens: int = 65_536,
                      progress: bool = True) -> Path:
    """Cache about ``tokens`` tokens' activations at every hook in ``hooks`` (one forward pass per batch).

    Resumes where a previous call with the same folder stopped; returns at once when it is complete.
    Attention sinks are dropped per hook point, so hooks may hold slightly different token counts.
    """
    folder = Path(folder)
    for hook in hooks:
        resolve_hook(lm.model, hook)
    windows_total = math.ceil(tokens / (context - 1))
    state = _load_progress(folder, hooks, windows_total)
    wanted = {"model": lm.name, "d_model": lm.d_model, "corpus": corpus, "context": context, "seed": seed}
    for key, value in wanted.items():
        if state.setdefault(key, value) != value:
            from saescope.errors import SaescopeError

            raise SaescopeError(f"{folder} caches activations with {key} {state[key]!r}, not {value!r}: "
                                "use another folder")
    if state["windows"] >= windows_total:
        return folder
    writers = {hook: ShardWriter(folder / hook, shard_tokens=2**62) for hook in hooks}  # flushed by _commit only
    commit_every = max(model_batch, shard_tokens // (context - 1))  # windows per shard
    docs = load_corpus(corpus, split="train" if corpus == "embedded" else "all")
    windows = windows_with_sources(lm.tokenizer, docs, context, seed, start=state["windows"])
    pending: dict[str, list] = {"windows": [], **{hook: [] for hook in hooks}}  # since the last commit
    bar = tqdm(total=windows_total, initial=state["windows"], unit="window", disable=not progress,
               desc=f"caching {len(hooks)} hook points")
    with deferred_interrupt() as interrupted:
        while state["windows"] < windows_total and not interrupted():
            batch = [w for _, w in zip(range(min(model_batch, windows_total - state["windows"])), windows)]
            if not batch:
                break
            acts = hooks_activations(lm, hooks, torch.stack([ids for ids, _ in batch]).to(lm.device))
            pending["windows"].extend(batch)
            for hook, (x, keep) in acts.items():
                writers[hook].add(x[keep])
                pending[hook].append(keep.cpu())
            state["windows"] += len(batch)
            bar.update(len(batch))
            if sum(w.n_pending for w in writers.values()) >= commit_every * (context - 1) * len(hooks):
                _commit(folder, writers, state, pending)
        bar.close()
        _commit(folder, writers, state, pending)
    if state["windows"] < windows_total and interrupted():
        raise JobInterrupted(f"interrupted after {state['windows']} of {windows_total} windows: the cache in {folder} "
                             f"is consistent; run again to resume ({RESUME_HINT})")
    return folder


def _commit(folder: Path, writers: dict[str, ShardWriter], state: dict, pending: dict[str, list]) -> None:
    """Flush every hook's shard with its window file, then record the point in ``progress.json``."""
    if pending["windows"]:
        ids = torch.stack([ids for ids, _ in pending["windows"]])
        sources = torch.stack([src for _, src in pending["windows"]])
        for hook, writer in writers.items():
            if not writer.pending:  # every token a sink: still one (empty) shard, so shards and window files pair up
                writer.add(torch.zeros(0, state["d_model"]))
            write_window_file(folder / hook, writer.flush(), ids, sources, torch.cat(pending[hook]))
            pending[hook].clear()
        pending["windows"].clear()
    state["shards"] = {hook: len(shard_files(folder / hook)) for hook in writers}
    state["tokens"] = {hook: cached_tokens(folder / hook) for hook in writers}
    state["dtype"] = "bfloat16"
    write_json(folder / PROGRESS_FILE, state)


def _load_progress(folder: Path, hooks: list[str], windows_total: int) -> dict:
    file = folder / PROGRESS_FILE
    if not file.exists():
        for hook in hooks:  # a cache without a progress file is discarded: it is not known to be whole
            for shard in (folder / hook).glob("*.safetensors"):
                shard.unlink()
        return {"windows": 0, "hooks": list(hooks), "windows_total": windows_total, "shards": {}}
    state = read_json(file, "activation-cache progress")
    if sorted(state.get("hooks", [])) != sorted(hooks):
        from saescope.errors import SaescopeError

        raise SaescopeError(f"{folder} caches hook points {state.get('hooks')}, not {hooks}: use another folder")
    for hook in hooks:
        done = state["shards"].get(hook, 0)
        for shard in shard_files(folder / hook)[done:]:
            shard.unlink()  # written after the last consistent point
        for file in sorted((folder / hook).glob(WINDOW_FILE.replace("{:05d}", "*")))[done:]:
            file.unlink()
    state["windows_total"] = windows_total
    return state
