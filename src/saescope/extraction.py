"""One streaming pass of model + SAE over a corpus -> a features RUN folder (``saescope features extract``).

The model runs only up to the SAE's hook; activations are encoded and folded into a
``FeatureAccumulator`` batch by batch, so memory does not grow with the corpus. Every
``checkpoint_every`` batches the accumulator is saved (``RUN/checkpoint/``, atomic); ``resume=True``
continues from it and gives the same result as an uninterrupted run (the window order is fixed).
The run is complete when ``RUN/manifest.json`` exists; it is written last.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from saescope.activations import sink_mask
from saescope.corpus import load_corpus, windows_with_sources
from saescope.errors import SaescopeError
from saescope.feature_run import FeatureRun, sae_fingerprint, write_run
from saescope.feature_stats import FeatureAccumulator
from saescope.hooks import forward_until
from saescope.models import LoadedModel
from saescope.sae import SAE
from saescope.storage import atomic_path


def extract_features(lm: LoadedModel, sae: SAE, out: str | Path, corpus: str = "embedded", tokens: int = 1_000_000,
                     hook: str | None = None, batch_size: int = 16, context: int = 128, top_k: int = 20,
                     resume: bool = False, checkpoint_every: int = 50, progress: bool = True,
                     sae_name: str = "default") -> FeatureRun:
    """Run ``lm`` + ``sae`` over ``tokens`` tokens of ``corpus`` and write the RUN folder ``out``.

    Example::

        run = extract_features(lm, load_sae("default"), "runs/default", tokens=200_000)
        run.stats.sort_values("max", ascending=False).head()
    """
    hook = lm.check_sae(sae, hook)
    if tokens <= 0 or batch_size <= 0 or top_k <= 0:
        raise SaescopeError("--tokens, --batch-size and --top must be positive")
    out = Path(out)
    ckpt = out / "checkpoint"
    if (out / "manifest.json").exists() and not resume:
        raise SaescopeError(f"{out} already holds a finished run: pick a new --out")
    if ckpt.exists() and not resume:
        raise SaescopeError(f"{out} holds an unfinished run: pass --resume to continue it, or pick a new --out")
    split = "train" if corpus == "embedded" else "all"
    docs = load_corpus(corpus, split)
    acc = FeatureAccumulator(sae.d_sae, len(lm.tokenizer), top_k=top_k)
    windows_done = _load_checkpoint(ckpt, acc, sae) if resume and ckpt.exists() else 0
    n_windows = math.ceil(tokens / context)
    started = time.perf_counter()
    windows = windows_with_sources(lm.tokenizer, docs, context, seed=0, start=windows_done)
    bar = tqdm(total=n_windows * context, initial=windows_done * context, unit="tok", unit_scale=True,
               disable=not progress, desc="extract features")
    batches_since_checkpoint = 0
    while windows_done < n_windows:
        batch = [w for _, w in zip(range(min(batch_size, n_windows - windows_done)), windows)]
        if not batch:
            break
        ids = torch.stack([ids for ids, _ in batch]).to(lm.device)  # [B, T]
        sources = torch.stack([src for _, src in batch])  # [B, T, 2]
        encode_batch(lm, sae, hook, ids, sources, acc, windows_done)
        windows_done += len(batch)
        bar.update(len(batch) * context)
        batches_since_checkpoint += 1
        if batches_since_checkpoint >= checkpoint_every and windows_done < n_windows:
            _save_checkpoint(ckpt, acc, windows_done, sae)
            batches_since_checkpoint = 0
    bar.close()
    if windows_done == 0:
        raise SaescopeError(f"corpus {corpus!r} has fewer than {context} tokens")
    manifest = {"model": lm.name, "sae": sae_name, "sae_fingerprint": sae_fingerprint(sae), "hook": hook,
                "d_sae": sae.d_sae, "corpus": corpus, "split": split, "context": context, "top_k": top_k,
                "windows": windows_done, "tokens_requested": tokens,
                "tokens": int(acc.state["n_tokens"]), "seconds": round(time.perf_counter() - started, 1)}
    write_run(out, acc, lm, sae, docs, manifest)
    shutil.rmtree(ckpt, ignore_errors=True)
    return FeatureRun.load(out)


@torch.no_grad()
def encode_batch(lm: LoadedModel, sae: SAE, hook: str, ids: torch.Tensor, sources: torch.Tensor,
                 acc: FeatureAccumulator, first_window: int) -> None:
    """Forward ``ids`` up to ``hook``, encode with ``sae`` and fold the features into ``acc``."""
    acts = forward_until(lm.model, [hook], ids)[hook]  # [B, T, d_model]
    keep = ~sink_mask(acts)
    rows, features, values = sae.encode_sparse(acts.reshape(-1, acts.shape[-1]).to(sae.W_enc.dtype))
    acc.update_sparse(rows, features, values, ids, sources, keep, first_window)


def _save_checkpoint(folder: Path, acc: FeatureAccumulator, windows_done: int, sae: SAE) -> None:
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(acc.state_dict(), str(tmp / "accumulator.safetensors"))
        (tmp / "progress.json").write_text(json.dumps({"windows_done": windows_done,
                                                       "sae_fingerprint": sae_fingerprint(sae)}))


def _load_checkpoint(folder: Path, acc: FeatureAccumulator, sae: SAE) -> int:
    try:
        progress = json.loads((folder / "progress.json").read_text())
        state = load_file(str(folder / "accumulator.safetensors"))
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same user problem
        raise SaescopeError(f"checkpoint {folder} is unreadable ({type(exc).__name__}): delete it to start over") from None
    if progress["sae_fingerprint"] != sae_fingerprint(sae):
        raise SaescopeError(f"{folder} was written with another SAE: pick a new --out")
    acc.load_state_dict(state)
    return int(progress["windows_done"])
