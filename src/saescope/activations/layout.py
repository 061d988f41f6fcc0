"""The on-disk layout of an activation cache, and its checks: what the writers (``stream``, ``cache``)
and the readers (``windows``, ``sae`` training, ``features extract --activations``) both need.

A cache folder holds ``progress.json`` (the index, ``PROGRESS_FILE``) and one folder per hook point
with ``shard_NNNNN.safetensors`` (``acts``: the kept activations, bfloat16) and, for each shard,
``windows_NNNNN.safetensors`` (the token ids, corpus positions and kept mask of its windows).
"""

from __future__ import annotations

from pathlib import Path

from saescope.errors import SaescopeError
from saescope.storage import read_json

PROGRESS_FILE = "progress.json"
WINDOW_FILE = "windows_{:05d}.safetensors"
SHARD_FILE = "shard_{:05d}.safetensors"


def shard_files(folder: str | Path) -> list[Path]:
    """The activation shards (``SHARD_FILE``) in ``folder``, in the order they were written."""
    return sorted(Path(folder).glob(SHARD_FILE.replace("{:05d}", "*")))


def cached_tokens(folder: str | Path) -> int:
    """Tokens held by one hook point's cache folder (from the shard headers, without loading them)."""
    from safetensors import safe_open

    total = 0
    for shard in shard_files(folder):
        with safe_open(str(shard), "pt") as f:
            total += f.get_slice("acts").get_shape()[0]
    return total


def check_cache_fits(folder: str | Path, model_name: str, hook: str, d_model: int) -> None:
    """Refuse a hook point's cache folder written for another model, hook point or width (``SaescopeError``)."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    progress = folder.parent / PROGRESS_FILE
    if progress.is_file():
        state = read_json(progress, "activation-cache progress")
        if state.get("model", model_name) != model_name:
            raise SaescopeError(f"{folder} holds activations of model {state['model']!r}, not {model_name!r}")
        if folder.name != hook:
            raise SaescopeError(f"{folder} holds activations of {folder.name!r}, not of hook (--hook) {hook!r}")
    for shard in shard_files(folder):  # headers only: cheap, and a truncated file fails
        try:
            with safe_open(str(shard), "pt") as handle:
                width = handle.get_slice("acts").get_shape()[-1]
        except (OSError, SafetensorError, KeyError) as exc:
            raise SaescopeError(f"{shard} is not a readable activation shard ({type(exc).__name__}): "
                                "delete it (and progress.json) and cache again") from None
        if width != d_model:
            raise SaescopeError(f"{shard} holds {width}-wide activations; the model's width is {d_model}")
