"""A synthetic world with known features, to check that an SAE architecture recovers them (SAELens'
SynthSAEBench idea, on CPU in seconds).

**The world** (``World``): ``n_features`` (256) unit vectors in ``d`` (128) dimensions (random, so in
superposition: twice as many features as dimensions). A sample is ``Σ_i a_i·v_i`` over the active features, magnitudes
``a_i = |N(1, 0.2)|``. Features come in three kinds:
- **parents** (``parents``; firing probability 0.06–0.10), each with ``children_per_parent`` children;
- **children** fire only when their parent fires: one of them, chosen uniformly, with probability 0.8
  (a hierarchy, which is what makes plain SAEs *absorb* a parent into its children);
- **independent** features, firing probabilities falling like a power law from 0.05 to 0.005.

**The check** (``recovery``): each SAE is trained on fresh samples with the trainer's objective
(``sae.fit_tensor``), at the same width as the world and the same L0 (k = the world's expected number of
active features), then compared with the truth:
- ``mcc``: the mean |cosine| between decoder rows and true features after an optimal one-to-one
  matching (``scipy.optimize.linear_sum_assignment``), SAELens' mean correlation coefficient;
- ``f1``: for each true feature, the matched latent's firing (> 0) against the feature's being active on
  held-out samples; the F1 of that classification, averaged over features (``precision`` and
  ``recall`` likewise), SAELens' classification metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.fit_tensor import fit_sampler

ARCHITECTURES = ("topk", "batchtopk", "matryoshka", "relu", "jumprelu")


@dataclass
class World:
    """Known features and how they fire (module docstring)."""

    vectors: Tensor  # [n_features, d], unit rows
    probability: Tensor  # [n_features]: marginal firing probability of independent features and parents
    parents: int
    children_per_parent: int
    child_given_parent: float = 0.8

    @classmethod
    def make(cls, d: int = 128, n_features: int = 256, parents: int = 32, children_per_parent: int = 3,
             seed: int = 0) -> World:
        generator = torch.Generator().manual_seed(10_007 * (seed + 1))  # a stream no SAE initialisation shares
        if parents * (1 + children_per_parent) > n_features:
            raise SaescopeError(f"{parents} parents with {children_per_parent} children need more than "
                                f"{n_features} features")
        vectors = torch.randn(n_features, d, generator=generator)
        probability = torch.zeros(n_features)
        probability[:parents] = torch.linspace(0.10, 0.06, parents)
        independent = n_features - parents * (1 + children_per_parent)
        probability[parents * (1 + children_per_parent):] = 0.05 * (0.1 ** torch.linspace(0, 1, independent))
        return cls(vectors / vectors.norm(dim=-1, keepdim=True), probability, parents, children_per_parent)

    @property
    def n_features(self) -> int:
        return len(self.vectors)

    @property
    def expected_l0(self) -> float:
        return float(self.probability.sum() + self.probability[:self.parents].sum() * self.child_given_parent)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(x [n, d], active [n, n_features] bool)``."""
        active = torch.rand(n, self.n_features, generator=generator) < self.probability
        parent_on = active[:, :self.parents]
        pick = torch.randint(0, self.children_per_parent, (n, self.parents), generator=generator)
        child_on = parent_on & (torch.rand(n, self.parents, generator=generator) < self.child_given_parent)
        children = torch.zeros(n, self.parents, self.children_per_parent, dtype=torch.bool)
        children.scatter_(2, pick.unsqueeze(-1), child_on.unsqueeze(-1))
        active[:, self.parents:self.parents * (1 + self.children_per_parent)] = children.reshape(n, -1)
        magnitude = (1 + 0.2 * torch.randn(n, self.n_features, generator=generator)).abs()
        return (active * magnitude) @ self.vectors, active


def make_sae(architecture: str, world: World, k: int) -> tuple[SAE, list[int] | None]:
    """An untrained SAE of ``architecture`` as wide as the world, and its Matryoshka widths (or None)."""
    if architecture not in ARCHITECTURES:
        raise SaescopeError(f"unknown architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}")
    activation = "batchtopk" if architecture == "matryoshka" else architecture
    sae = SAE(SAEConfig(d_in=world.vectors.shape[1], d_sae=world.n_features, activation=activation,
                        k=k if activation in ("topk", "batchtopk") else None))
    n = world.n_features
    return sae, ([n // 8, n // 4, n // 2, n] if architecture == "matryoshka" else None)


def mean_correlation(decoder: Tensor, truth: Tensor) -> tuple[float, np.ndarray]:
    """Mean |cosine| of the optimal one-to-one matching, and the latent matched to each true feature."""
    from scipy.optimize import linear_sum_assignment

    cos = (torch.nn.functional.normalize(truth, dim=-1) @ torch.nn.functional.normalize(decoder, dim=-1).T).abs()
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    matched = np.full(len(truth), -1)
    matched[rows] = cols
    return float(cos[rows, cols].mean()), matched


def classification(fires: Tensor, active: Tensor, matched: np.ndarray) -> dict[str, float]:
    """Mean precision, recall and F1 of each matched latent's firing against its feature's activity."""
    predicted = fires[:, torch.from_numpy(matched)]
    tp = (predicted & active).sum(0).double()
    precision = tp / predicted.sum(0).clamp_min(1)
    recall = tp / active.sum(0).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())}


def recovery(architectures: tuple[str, ...] = ("topk", "batchtopk", "matryoshka"), steps: int = 2000,
             batch_size: int = 1024, world: World | None = None, seed: int = 0, eval_samples: int = 20_000,
             sparsity_coeff: float = 3.0, lr: float = 3e-3) -> list[dict[str, float | str]]:
    """Train each architecture on ``world`` at equal width and L0; one row of figures per architecture."""
    unknown = [a for a in architectures if a not in ARCHITECTURES]
    if unknown or not architectures:
        raise SaescopeError(f"unknown architecture {', '.join(unknown) or '(none)'}: use {', '.join(ARCHITECTURES)}")
    world = world or World.make(seed=seed)
    k = max(1, round(world.expected_l0))
    x_eval, active = world.sample(eval_samples, torch.Generator().manual_seed(seed + 1))  # not a training batch
    rows: list[dict[str, float | str]] = []
    for architecture in architectures:
        sae, widths = make_sae(architecture, world, k)
        sae.reset_parameters(torch.Generator().manual_seed(seed))
        coeff = sparsity_coeff if architecture in ("relu", "jumprelu") else 0.0
        fvus = fit_sampler(sae, lambda g: world.sample(batch_size, g)[0], steps, lr=lr, seed=seed, matryoshka=widths,
                           sparsity_coeff=coeff)
        with torch.no_grad():
            feats = sae.encode(x_eval)
        mcc, matched = mean_correlation(sae.W_dec.detach(), world.vectors)
        rows.append({"arch": architecture, "k": k, "l0": float((feats > 0).sum(-1).float().mean()), "mcc": mcc,
                     **classification(feats > 0, active, matched), "train_fvu": float(np.mean(fvus[-50:]))})
    return rows


synthetic_recovery = recovery  # the name under which ``saescope`` exports it
