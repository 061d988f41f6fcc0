"""Faster single-sequence decoding on CPU: a matrix-vector path for every single-row product.

Each decode step with one sequence multiplies one row by every weight matrix. That is a
matrix-vector product that reads the whole weight, so the step is bound by memory reads. With
PyTorch's CPU BLAS, a matrix with at least as many outputs as inputs (the attention's q/o
projections, the MLP's gate/up projections, the LM head) is read faster when it is stored
column-major. On SmolLM2-135M in fp32, the LM head (49152 × 576) takes 11.9 ms row-major and
6.4 ms column-major; gate/up take 0.39 ms and 0.22 ms; q 0.17 ms and 0.13 ms. Tall matrices (k/v,
down) do not gain, and batched inputs are slower column-major. So only single-row inputs go
through the copies: a batch-1 decode step. Prompts, batches, and everything outside ``generate``
use the model's own weights.

Measured on a 64-token greedy generation with a steering hook, batch 1: 3.96 s with the copies
against 5.27 s without.

The copies are made once per model, on first use: +400 MB for SmolLM2 in fp32. They are rebuilt if
a weight is edited in place.

**bfloat16 / float16.** There ``F.linear`` on one row goes through the half-precision GEMM path,
which reads the weights at ~60 % of what the memory streams; ``torch.mv`` on the model's own
(row-major) weight is the GEMV kernel. On a 2-core Xeon with ``avx512_bf16`` (SmolLM2-135M, bf16,
64-token greedy decode, batch 1): 26.3 tokens/s plain, **31.9** with ``torch.mv`` for every linear
layer (no copy needed), 27.0 with a column-major ``W @ x``. So in half precision every single-row
product takes ``torch.mv``; nothing is copied, so edits need no rebuild.

GPUs keep the plain path. Set ``SAESCOPE_DECODE_LAYOUT=0`` to turn both paths off. The products are
the same sums in another order, so logits agree with the plain path to rounding (tests check this).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (weight stamps, copies)


def _wide_linears(model: torch.nn.Module) -> list[tuple[torch.nn.Linear, torch.Tensor]]:
    """The wide layers with their column-major copies, rebuilt if a weight changed since (an edit)."""
    wide = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features >= m.in_features]
    stamp = [(m.weight.data_ptr(), m.weight._version) for m in wide]
    if model not in _COPIES or _COPIES[model][0] != stamp:
        _COPIES[model] = (stamp, [(m, m.weight.detach().t().contiguous()) for m in wide])
    return _COPIES[model][1]


HALF = (torch.bfloat16, torch.float16)


def _applies(model: torch.nn.Module) -> bool:
    weight = next(model.parameters())
    return (os.environ.get("SAESCOPE_DECODE_LAYOUT", "1") != "0" and weight.device.type == "cpu"
            and weight.dtype in (torch.float32, *HALF))


def _single_row_patches(model: torch.nn.Module) -> list[tuple[torch.nn.Linear, object]]:
    """``(module, forward)`` for every layer whose single-row products take the faster path."""
    if next(model.parameters()).dtype in HALF:
        def gemv(x: torch.Tensor, _module: torch.nn.Linear) -> torch.Tensor:
            out = torch.mv(_module.weight, x.reshape(-1)).view(*x.shape[:-1], _module.out_features)
            return out if _module.bias is None else out + _module.bias
        return [(m, lambda x, _m=m: gemv(x, _m)) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return [(m, lambda x, _m=m, _w=weight_t: F.linear(x, _w.t(), _m.bias)) for m, weight_t in _wide_linears(model)]


@contextlib.contextmanager
def decode_layout(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, single-row inputs to the model's ``nn.Linear`` layers take the faster path (see
    the module docstring: column-major copies of the wide layers in float32, ``torch.mv`` in half
    precision). Does nothing off CPU."""
    if not _applies(model):
        yield
        return
    patched = []
    for module, fast in _single_row_patches(model):
        def forward(x: torch.Tensor, _module: torch.nn.Linear = module, _fast=fast) -> torch.Tensor:
            if x.numel() == x.shape[-1]:  # one row: a batch-1 decode step
                return _fast(x)
            return F.linear(x, _module.weight, _module.bias)
        module.forward = forward
        patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
