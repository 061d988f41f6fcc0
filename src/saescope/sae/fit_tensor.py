"""Train an SAE on samples drawn in memory: the loop for small problems whose data is a tensor or a
sampler, not a model's activations (a meta-SAE over decoder rows, a synthetic ground-truth world).

It uses the trainer's objectives (``sae.objectives``: TopK/BatchTopK with AuxK, Matryoshka prefixes,
ReLU, JumpReLU), unit-norm decoder rows with the gradient's parallel part removed, and the BatchTopK
threshold tracker, so an SAE fitted here behaves like one from ``sae train``; there is no activation
cache, checkpoint or schedule beyond a linear decay over the last fifth of the steps.

Example::

    sae = SAE(SAEConfig(d_in=64, d_sae=256, activation="batchtopk", k=8))
    fit_sampler(sae, lambda g: torch.randn(1024, 64, generator=g), steps=500)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from saescope.sae.core import SAE
from saescope.sae.objectives import ThresholdTracker, objective, unit_decoder_step


def fit_sampler(sae: SAE, sample: Callable[[torch.Generator], Tensor], steps: int, lr: float = 1e-3,
                seed: int = 0, auxk_coeff: float = 1 / 32, sparsity_coeff: float = 0.0,
                matryoshka: list[int] | None = None, dead_after: int = 50_000) -> list[float]:
    """Fit ``sae`` in place for ``steps`` Adam steps on batches ``sample(generator)``; returns each step's FVU."""
    generator = torch.Generator().manual_seed(seed)
    first = sample(generator)
    with torch.no_grad():
        sae.b_dec.copy_(first.median(dim=0).values.to(sae.b_dec.dtype))
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    tracker, dead_counter, fvus = ThresholdTracker(), torch.zeros(sae.d_sae, dtype=torch.long), []
    x = first
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (steps - step) / max(1, steps // 5))
        result = objective(sae, x, dead_counter > dead_after, sparsity_coeff, auxk_coeff, threshold=tracker,
                           matryoshka=matryoshka)
        unit_decoder_step(sae, optimizer, result.loss)
        with torch.no_grad():
            dead_counter += len(x)
            dead_counter[result.fired] = 0
        fvus.append(result.fvu)
        x = sample(generator)
    return fvus


def fit_rows(sae: SAE, rows: Tensor, steps: int, batch_size: int, lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Fit ``sae`` on random batches (with replacement) of the rows of ``rows`` [n, d_in]."""
    rows = rows.detach().float()
    return fit_sampler(sae, lambda g: rows[torch.randint(0, len(rows), (batch_size,), generator=g)], steps, lr, seed)
