"""Where each cached activation came from, and reading a cache back window by window.

``activations.cache`` writes, beside every activation shard ``HOOK/shard_NNNNN.safetensors``, a window
file ``HOOK/windows_NNNNN.safetensors`` for the same corpus windows: ``ids`` [W, T] (int32 token ids),
``sources`` [W, T, 2] (int32: document, token position) and ``keep`` [W, T] (bool: the tokens whose
activations are in the shard, i.e. not attention sinks). The shard's rows are the kept tokens in window
order, so shard + window file give back the ``(acts, keep)`` a forward pass would, at about 1 % more disk.

``CachedWindows`` reads them in order for ``features extract --activations``: it returns the windows a
model forward would have made (same corpus, seed and context) with the activations filled in from the
shards (bfloat16 as stored) and zeros at the dropped positions, reading only the rows asked for.

Example::

    cached = CachedWindows("acts/blocks.12.hook_resid_post", lm.name, "blocks.12.hook_resid_post", lm.d_model)
    batch = cached.take(16)          # WindowBatch(ids, sources, acts, keep) of windows 0..15
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from saescope.activations.layout import PROGRESS_FILE, SHARD_FILE, WINDOW_FILE, check_cache_fits
from saescope.errors import SaescopeError
from saescope.storage import atomic_path, read_json


@dataclass
class WindowBatch:
    """Consecutive corpus windows: ``ids`` [B, T], ``sources`` [B, T, 2], and when read with activations,
    ``acts`` [B, T, d] and ``keep`` [B, T] (else ``None``)."""

    ids: torch.Tensor
    sources: torch.Tensor
    acts: torch.Tensor | None
    keep: torch.Tensor | None


def write_window_file(folder: Path, index: int, ids: torch.Tensor, sources: torch.Tensor, keep: torch.Tensor) -> None:
    """Write the window file that goes with activation shard ``index`` of ``folder`` (atomically)."""
    with atomic_path(folder / WINDOW_FILE.format(index)) as tmp:
        save_file({"ids": ids.to(torch.int32).contiguous(), "sources": sources.to(torch.int32).contiguous(),
                   "keep": keep.to(torch.bool).contiguous()}, str(tmp))


class CachedWindows:
    """A hook point's cache folder read as a stream of windows, from window ``start`` on."""

    def __init__(self, folder: str | Path, model_name: str, hook: str, d_model: int, start: int = 0) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SaescopeError(f"activations folder (--activations) {self.folder}: no such cache folder (make one with "
                                "saescope activations cache)")
        check_cache_fits(self.folder, model_name, hook, d_model)
        progress_file = self.folder.parent / PROGRESS_FILE
        state = read_json(progress_file, "activation-cache progress") if progress_file.is_file() else {}
        if "context" not in state:
            raise SaescopeError(f"{self.folder} holds activations without their token ids (no {PROGRESS_FILE}, or one "
                                "written by an older saescope): cache again into a new folder")
        self.context, self.corpus = int(state["context"]), str(state["corpus"])
        self.dtype = str(state.get("dtype", "bfloat16"))  # of the cached activations
        n_shards = int(state["shards"].get(hook, 0))
        self.shards = [self.folder / SHARD_FILE.format(i) for i in range(n_shards)]
        self.window_files = [self.folder / WINDOW_FILE.format(i) for i in range(n_shards)]
        self.first_window = [0]  # the first window of every shard, then the total
        for file in self.window_files:
            self.first_window.append(self.first_window[-1] + _window_count(file))
        self.position = start
        self._loaded: tuple[int, dict[str, torch.Tensor], torch.Tensor] | None = None

    @property
    def n_windows(self) -> int:
        """Windows the cache holds."""
        return self.first_window[-1]

    def take(self, n: int, with_acts: bool = True) -> WindowBatch | None:
        """The next ``n`` windows (fewer at the end of the cache; ``None`` when none is left); without
        ``with_acts`` only their ids and sources, without reading any activation."""
        stop = min(self.position + n, self.n_windows)
        if stop <= self.position:
            return None
        parts = []
        while self.position < stop:
            shard = bisect_right(self.first_window, self.position) - 1
            end = min(stop, self.first_window[shard + 1])
            parts.append(self._read(shard, self.position - self.first_window[shard], end - self.first_window[shard],
                                    with_acts))
            self.position = end
        ids, sources = torch.cat([p.ids for p in parts]), torch.cat([p.sources for p in parts])
        if not with_acts:
            return WindowBatch(ids, sources, None, None)
        return WindowBatch(ids, sources, torch.cat([p.acts for p in parts]), torch.cat([p.keep for p in parts]))

    def _read(self, shard: int, a: int, b: int, with_acts: bool) -> WindowBatch:
        meta, rows_before = self._meta(shard)
        ids, sources, keep = meta["ids"][a:b].long(), meta["sources"][a:b].long(), meta["keep"][a:b]
        if not with_acts:
            return WindowBatch(ids, sources, None, None)
        try:
            with safe_open(str(self.shards[shard]), "pt") as handle:
                kept = handle.get_slice("acts")[int(rows_before[a]):int(rows_before[b])]
        except (OSError, SafetensorError, KeyError) as exc:
            raise SaescopeError(f"{self.shards[shard]} is not a readable activation shard ({type(exc).__name__}): "
                                "cache again into a new folder") from None
        if len(kept) != int(keep.sum()):
            raise SaescopeError(f"{self.shards[shard]} does not match {self.window_files[shard].name}: "
                                "cache again into a new folder")
        acts = torch.zeros(*keep.shape, kept.shape[-1], dtype=kept.dtype)
        acts[keep] = kept
        return WindowBatch(ids, sources, acts, keep)

    def _meta(self, shard: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self._loaded is None or self._loaded[0] != shard:
            meta = _load_window_file(self.window_files[shard])
            rows_before = torch.cat([torch.zeros(1, dtype=torch.long), meta["keep"].sum(1).cumsum(0)])
            self._loaded = (shard, meta, rows_before)
        return self._loaded[1], self._loaded[2]


def _load_window_file(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(file), "pt") as handle:
            return {name: handle.get_tensor(name) for name in ("ids", "sources", "keep")}
    except (OSError, SafetensorError, KeyError) as exc:
        raise SaescopeError(f"{file} is not a readable window file ({type(exc).__name__}): "
                            "cache again into a new folder") from None


def _window_count(file: Path) -> int:
    try:
        with safe_open(str(file), "pt") as handle:
            return int(handle.get_slice("ids").get_shape()[0])
    except (OSError, SafetensorError, KeyError) as exc:
        raise SaescopeError(f"{file} is missing or unreadable ({type(exc).__name__}): the cache has no token ids "
                            "for its activations; cache again into a new folder") from None
