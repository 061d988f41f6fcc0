"""Data-parallel SAE training: each rank trains on its slice of the same global batch.

Every rank reads the same shuffled stream of cached activations (``TrainConfig.activations``, same
seed), keeps rows ``[rank·B/N, (rank+1)·B/N)`` of each global batch, computes its part of the loss
with global normalizers (``objectives.BatchShare``), and the gradients are summed over ranks with
one all-reduce per step (one flat buffer). Parameters, Adam state, decoder renormalisation and
dead-latent counters then stay identical on every rank, and the trained weights equal a one-process
run's on the same global batches up to float rounding.

Why not ``torch.nn.parallel.DistributedDataParallel``: the objectives do not go through
``SAE.forward`` (the TopK encoder has its own sparse autograd function), and with four parameter
tensors there is nothing for DDP's gradient buckets to overlap; one ``all_reduce`` is the same
communication. Why only cached activations: streaming from the model, the ranks would each have to
run the model over the whole global batch (no speed-up) or see different batches (no longer the same
run as one process); the cache is read by every rank at a fraction of a forward pass's cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saescope.errors import SaescopeError
from saescope.parallel.collectives import all_reduce_sum
from saescope.parallel.context import DistContext
from saescope.sae.objectives import BatchShare


class DataParallel:
    """This rank's view of a data-parallel run (one process: the identity)."""

    def __init__(self, ctx: DistContext, batch_size: int, activation: str, cached: bool) -> None:
        self.ctx = ctx
        if ctx.distributed:
            if not cached:
                raise SaescopeError("training with several workers reads cached activations: cache them first "
                                    "(`saescope activations cache --hook ... --out DIR`) and pass --activations DIR")
            if batch_size % ctx.world_size:
                raise SaescopeError(f"batch_size (--batch-size) {batch_size} does not split into {ctx.world_size} workers: "
                                    f"use a multiple of {ctx.world_size}")
            if activation == "batchtopk":
                raise SaescopeError("batchtopk picks its top activations over the whole batch: train it in one "
                                    "process (topk, relu and jumprelu train data-parallel)")

    def share(self, x: Tensor) -> tuple[Tensor, BatchShare | None]:
        """This rank's rows of the global batch ``x`` and its ``BatchShare`` (``None`` on one process)."""
        if not self.ctx.distributed:
            return x, None
        rows = len(x) // self.ctx.world_size
        mine = x[self.ctx.rank * rows:(self.ctx.rank + 1) * rows]
        share = BatchShare(len(x), (x - x.mean(0)).pow(2).sum(), lambda t: all_reduce_sum(self.ctx, t),
                           distributed=True)
        return mine, share

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank (so that all stop at the same step)."""
        if not self.ctx.distributed:
            return flag
        return bool(all_reduce_sum(self.ctx, torch.tensor([int(flag)])) > 0)

    @torch.no_grad()
    def sum_gradients(self, module: nn.Module) -> None:
        """Sum every parameter's gradient over ranks (one flat all-reduce)."""
        if not self.ctx.distributed:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        all_reduce_sum(self.ctx, flat)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()
