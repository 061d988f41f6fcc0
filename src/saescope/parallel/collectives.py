"""Gathering and summing fixed-shape tensors across ranks (identity on one process)."""

from __future__ import annotations

import torch
from torch import Tensor

from saescope.parallel.context import DistContext


def all_gather_state(ctx: DistContext, state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """Every rank's ``state`` (same keys, shapes and dtypes on all ranks), in rank order, on every rank.

    Tensors travel one key at a time, on the CPU for gloo."""
    if not ctx.distributed:
        return [state]
    gathered: list[dict[str, Tensor]] = [{} for _ in range(ctx.world_size)]
    device = torch.device("cuda", ctx.local_rank) if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    for key in sorted(state):
        local = state[key].contiguous().to(device)
        parts = [torch.empty_like(local) for _ in range(ctx.world_size)]
        torch.distributed.all_gather(parts, local)
        for rank, part in enumerate(parts):
            gathered[rank][key] = part.to(state[key].device)
    return gathered


def all_reduce_sum(ctx: DistContext, tensor: Tensor) -> Tensor:
    """``tensor`` summed over ranks, in place (and returned)."""
    if ctx.distributed:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def all_reduce_max(ctx: DistContext, tensor: Tensor) -> Tensor:
    """``tensor``'s element-wise maximum over ranks, in place (and returned)."""
    if ctx.distributed:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor
