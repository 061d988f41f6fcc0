"""Stream a hook point's activations from the model to a trainer through a shuffled buffer.

Nothing holds the whole corpus's activations in memory: windows of tokens are run through the model
(only up to the hook's layer, ``activations.read.hook_activations``), attention sinks are dropped,
and the rest go into a fixed-size buffer that is shuffled and drained by half before refilling.
Optionally the activations are also written once to disk shards (bfloat16 safetensors) so later
epochs replay them without running the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from saescope.activations.layout import SHARD_FILE, shard_files
from saescope.activations.read import hook_activations
from saescope.corpus import Document, token_windows
from saescope.model.loading import LoadedModel
from saescope.storage import atomic_path


class ModelActivations:
    """Activation chunks ``[n_tokens, d_model]`` from running ``lm`` over ``docs`` window by window.

    ``windows_consumed`` counts the windows already run, so a resumed job can start after them. The
    corpus is cycled with a new shuffle when it runs out.

    Example::

        source = ModelActivations(lm, "blocks.12.hook_resid_post", docs)
        chunk = next(iter(source))       # [~model_batch * (context - 1), 576]
    """

    def __init__(self, lm: LoadedModel, hook: str, docs: list[Document], context: int = 128,
                 model_batch: int = 16, seed: int = 0, start_window: int = 0) -> None:
        self.lm, self.hook, self.docs = lm, hook, docs
        self.context, self.model_batch = context, model_batch
        self.seed, self.windows_consumed = seed, start_window

    def __iter__(self) -> Iterator[Tensor]:
        windows_per_cycle: int | None = None
        while True:
            cycle, offset = self._position(windows_per_cycle)
            produced = offset
            batch: list[Tensor] = []
            for window in token_windows(self.lm.tokenizer, self.docs, self.context, self.seed + cycle, offset):
                batch.append(window)
                produced += 1
                if len(batch) == self.model_batch:
                    yield self._run(batch)
                    batch = []
            if batch:
                yield self._run(batch)
            if produced == 0:
                return
            windows_per_cycle = produced

    def _position(self, per_cycle: int | None) -> tuple[int, int]:
        if per_cycle is None:
            return 0, self.windows_consumed
        return divmod(self.windows_consumed, per_cycle)

    def _run(self, windows: list[Tensor]) -> Tensor:
        ids = torch.stack(windows).to(self.lm.device)  # [batch, context]
        acts, keep = hook_activations(self.lm, self.hook, ids)  # [batch, context, d], [batch, context]
        self.windows_consumed += len(windows)
        return acts[keep]  # [n_kept, d]


def shuffled_batches(chunks: Iterator[Tensor], batch_size: int, buffer_tokens: int,
                     generator: torch.Generator | None = None,
                     on_fill: Callable[[int, int], None] | None = None) -> Iterator[Tensor]:
    """Re-batch a stream of activation chunks into shuffled float32 batches ``[batch_size, d]``.

    Keeps at most ``buffer_tokens`` (+ one chunk) in memory; drains half the buffer between refills.
    ``on_fill(tokens_held, buffer_tokens)`` is called after every chunk while filling (progress bars).
    """
    buffer: Tensor | None = None  # [n, d]
    exhausted = False
    chunks = iter(chunks)
    while True:
        pending = [] if buffer is None else [buffer]
        n_pending = 0 if buffer is None else len(buffer)
        while not exhausted and n_pending < buffer_tokens:
            try:
                chunk = next(chunks).to(torch.float32)
            except StopIteration:
                exhausted = True
                break
            pending.append(chunk)
            n_pending += len(chunk)
            if on_fill is not None:
                on_fill(n_pending, buffer_tokens)
        if n_pending < batch_size:
            return
        buffer = torch.cat(pending) if len(pending) > 1 else pending[0]
        buffer = buffer[torch.randperm(len(buffer), generator=generator, device="cpu").to(buffer.device)]
        keep = len(buffer) // 2 if not exhausted else len(buffer) % batch_size
        n_out = (len(buffer) - keep) // batch_size * batch_size
        for start in range(0, n_out, batch_size):
            yield buffer[start:start + batch_size]
        buffer = buffer[n_out:]


class ShardWriter:
    """Append activation chunks to ``folder/shard_NNNNN.safetensors`` (bfloat16), each written atomically."""

    def __init__(self, folder: str | Path, shard_tokens: int = 131072) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard_tokens = shard_tokens
        self.pending: list[Tensor] = []
        self.n_pending = 0

    def add(self, chunk: Tensor) -> None:
        self.pending.append(chunk.detach().to("cpu", torch.bfloat16))
        self.n_pending += len(chunk)
        if self.n_pending >= self.shard_tokens:
            self.flush()

    def flush(self) -> int | None:
        """Write the pending chunks as the next shard; returns its index (``None`` when nothing was pending)."""
        if not self.pending:
            return None
        index = len(shard_files(self.folder))
        with atomic_path(self.folder / SHARD_FILE.format(index)) as tmp:
            save_file({"acts": torch.cat(self.pending).contiguous()}, str(tmp))
        self.pending, self.n_pending = [], 0
        return index


def replay_shards(folder: str | Path, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Yield the chunks written by ``ShardWriter`` in a random shard order (one epoch)."""
    shards = shard_files(folder)
    for i in torch.randperm(len(shards), generator=generator).tolist():
        yield load_file(str(shards[i]))["acts"]


def tee_to_shards(chunks: Iterator[Tensor], writer: ShardWriter) -> Iterator[Tensor]:
    """Pass chunks through unchanged while writing each one to ``writer``."""
    for chunk in chunks:
        writer.add(chunk)
        yield chunk
