"""Which process this is: rank, world size and device under ``torchrun``, and the process group.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment, or 1) everything is one process and no
process group is started, so every job runs unchanged on one machine. Under ``torchrun`` the group
is started from the environment (``env://``): gloo when the job runs on CPU, NCCL on CUDA; each
rank then uses ``cuda:LOCAL_RANK`` when the user asked for ``cuda``.

Example::

    ctx = distributed_context("cpu")
    if ctx.is_main:
        write_results()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from saescope.errors import SaescopeError

TIMEOUT = timedelta(minutes=30)  # how long a rank waits for the others at a collective


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes shared outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str) -> str:
        """The device this rank uses: ``cuda`` becomes ``cuda:LOCAL_RANK``; anything else is kept."""
        return f"cuda:{self.local_rank}" if self.distributed and requested == "cuda" else requested

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SaescopeError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def distributed_context(device: str = "cpu") -> DistContext:
    """The context of this process; starts the process group on the first call under ``torchrun``."""
    ctx = DistContext(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if not 0 <= ctx.rank < ctx.world_size:
        raise SaescopeError(f"RANK={ctx.rank} is outside WORLD_SIZE={ctx.world_size}")
    if ctx.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ctx.local_rank)
        torch.distributed.init_process_group(backend, timeout=TIMEOUT)
    return ctx


def end_process_group() -> None:
    """Leave the process group (at the end of a distributed job)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
