"""Training objectives, one per SAE activation: reconstruction + sparsity + dead-latent terms.

All losses are normalized: ``fvu`` is the reconstruction error over the batch's variance, so the
coefficients mean the same at any activation scale.
- topk: TopK (Gao et al. 2024) + AuxK on dead latents (coefficient ``auxk_coeff``, k_aux = d_in/2).
- batchtopk: the top B·k pre-activations over the whole batch (Bussmann et al. 2024) + AuxK; a
  ``ThresholdTracker`` keeps the global threshold used at inference (the mean over steps of the
  smallest kept activation). With ``matryoshka`` widths (Matryoshka BatchTopK, Bussmann et al. 2025,
  as SAELens and dictionary_learning define it) the loss is the sum of the FVUs of the reconstructions
  from each prefix of the dictionary (the full width included), so early latents must reconstruct
  alone; the reported ``fvu`` is the full width's.
- relu: L1 on activations weighted by decoder norms (``sparsity_coeff``).
- jumprelu: L0 through straight-through estimators with a rectangle kernel (Rajamanoharan et al. 2024).

Data-parallel training gives each rank a slice of the global batch and a ``BatchShare``: every
batch mean and normalizer is then taken over the *global* batch (sums over the slice divided by
global totals), so the ranks' gradients add up to exactly the global batch's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from saescope.sae.core import SAE


@dataclass
class ThresholdTracker:
    """The BatchTopK inference threshold: a running mean (over up to 1,000 steps) of the smallest
    activation kept in each batch, written into ``sae.threshold``. Owned by the trainer, checkpointed."""

    steps: int = 0

    @torch.no_grad()
    def update(self, sae: SAE, smallest_kept: Tensor) -> None:
        self.steps += 1
        rate = 1.0 / min(self.steps, 1000)
        sae.threshold.mul_(1 - rate).add_(rate * smallest_kept)


@dataclass
class BatchShare:
    """How this process's rows relate to the global batch (one process: the batch itself)."""

    rows: int  # rows of the global batch
    variance: Tensor  # Σ‖x − mean(x)‖² over the global batch: the FVU denominator
    total: Callable[[Tensor], Tensor] = field(default=lambda t: t)  # sum over ranks (an all-reduce)
    distributed: bool = False

    @classmethod
    def whole(cls, x: Tensor) -> BatchShare:
        """The share of a process that holds the whole batch ``x``."""
        return cls(len(x), _variance(x))


def _variance(x: Tensor) -> Tensor:
    return (x - x.mean(0)).pow(2).sum()


@dataclass
class StepResult:
    loss: Tensor
    fvu: float
    l0: float
    fired: Tensor  # [d_sae] bool: features that fired in this batch


def objective(sae: SAE, x: Tensor, dead: Tensor, sparsity_coeff: float, auxk_coeff: float,
              bandwidth: float = 0.05, threshold: ThresholdTracker | None = None,
              compute_dtype: torch.dtype = torch.float32, share: BatchShare | None = None,
              matryoshka: list[int] | None = None, target: Tensor | None = None) -> StepResult:
    """Loss of ``sae`` on the batch ``x`` [batch, d_in]; ``dead`` [d_sae] marks latents for AuxK.
    ``target`` is what the decoder must reconstruct: ``x`` itself (an SAE) or, for a transcoder, the
    MLP's output for the input ``x`` (a skip transcoder's ``skip(x)`` is part of its reconstruction).

    ``compute_dtype`` is the precision of the TopK encoder's forward matmul (bfloat16 only where the
    hardware runs it faster, ``saescope.precision``); ``threshold`` tracks the BatchTopK threshold;
    ``share`` says which part of the global batch ``x`` is (data-parallel training)."""
    act = sae.cfg.activation
    target = x if target is None else target
    share = share or BatchShare.whole(target)
    if act == "topk":
        return _topk_objective(sae, x, dead, auxk_coeff, compute_dtype, share, target)
    if act == "batchtopk" and share.distributed:
        from saescope.errors import SaescopeError
        raise SaescopeError("batchtopk picks its top activations over the whole batch: train it in one process "
                            "(topk, relu and jumprelu train data-parallel)")
    pre = sae.encode_pre(x)  # [batch, d_sae]
    if act == "batchtopk":
        feats = _batch_topk(pre, sae, threshold if threshold is not None else ThresholdTracker())
        recon, fired, l0, sparsity = sae.decode(feats), (feats > 0).any(0), (feats > 0).sum().float() / share.rows, 0.0
    elif act == "relu":
        feats = F.relu(pre)
        recon, fired = sae.decode(feats), (feats > 0).any(0)
        l0 = (feats > 0).sum().float() / share.rows
        sparsity = (feats * sae.W_dec.norm(dim=-1)).sum() / share.rows / x.shape[-1] ** 0.5
    else:  # jumprelu
        threshold = sae.threshold.clamp_min(1e-6)
        feats = _JumpReLU.apply(pre, threshold, bandwidth)
        recon, fired = sae.decode(feats), (feats > 0).any(0)
        l0_ste = _Step.apply(pre, threshold, bandwidth).sum() / share.rows
        l0, sparsity = l0_ste.detach(), l0_ste
    recon = recon + sae.skip(x)
    fvu = _fvu(recon, target, share)
    loss = fvu + sparsity_coeff * sparsity
    if act == "batchtopk" and matryoshka:
        loss = loss + sum(_fvu(feats[:, :m] @ sae.W_dec[:m] + sae.b_dec, target, share) for m in matryoshka[:-1])
    if act == "batchtopk" and bool(dead.any()):
        loss = loss + auxk_coeff * _auxk(sae, pre, target - recon.detach(), dead)
    return _result(loss, fvu, l0, fired, share)


def unit_decoder_step(sae: SAE, optimizer: torch.optim.Optimizer, loss: Tensor,
                      after_backward: Callable[[], None] | None = None) -> None:
    """One optimizer step that keeps decoder rows unit-norm: the gradient's component along each row is
    removed before the step and the rows renormalised after it (JumpReLU thresholds stay positive).
    ``after_backward`` runs between the backward pass and the step (e.g. summing gradients over ranks)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
        after_backward()
    with torch.no_grad():
        directions = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
        sae.W_dec.grad -= (sae.W_dec.grad * directions).sum(-1, keepdim=True) * directions
    optimizer.step()
    with torch.no_grad():
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
        if sae.cfg.activation == "jumprelu":
            sae.threshold.clamp_(min=1e-6)


def _result(loss: Tensor, fvu: Tensor, l0: Tensor | float, fired: Tensor, share: BatchShare) -> StepResult:
    """The step's figures over the global batch (this rank's parts summed over ranks)."""
    parts = share.total(torch.stack([fvu.detach().float(), torch.as_tensor(l0, dtype=torch.float32, device=fvu.device)]))
    fired = share.total(fired.to(torch.int32)) > 0
    return StepResult(loss=loss, fvu=float(parts[0]), l0=float(parts[1]), fired=fired)


def _fvu(recon: Tensor, x: Tensor, share: BatchShare) -> Tensor:
    return (recon - x).pow(2).sum() / share.variance


def _topk_objective(sae: SAE, x: Tensor, dead: Tensor, auxk_coeff: float, compute_dtype: torch.dtype,
                    share: BatchShare, target: Tensor) -> StepResult:
    """TopK + AuxK with a sparse backward: only the k (+ k_aux) selected latents get gradients."""
    k_aux = min(sae.d_in // 2, int(dead.sum()))
    values, indices = _SparseTopKEncode.apply(x, sae.W_enc, sae.b_enc, sae.b_dec, sae.cfg.k, dead, k_aux,
                                              sae.cfg.apply_b_dec_to_input, compute_dtype)
    values = F.relu(values)
    main_values, main_indices = values[:, :sae.cfg.k], indices[:, :sae.cfg.k]
    recon = sae.decode_sparse(main_values, main_indices) + sae.skip(x)
    fvu = _fvu(recon, target, share)
    loss = fvu
    if k_aux:
        residual = target - recon.detach()
        residual_hat = F.embedding_bag(indices[:, sae.cfg.k:], sae.W_dec, per_sample_weights=values[:, sae.cfg.k:],
                                       mode="sum")
        residual_total = share.total(residual.pow(2).sum()).clamp_min(1e-12)
        loss = loss + auxk_coeff * (residual_hat - residual).pow(2).sum() / residual_total
    l0 = (main_values > 0).sum().float() / share.rows
    return _result(loss, fvu, l0, _fired(main_indices, main_values.detach(), sae.d_sae), share)


class _SparseTopKEncode(torch.autograd.Function):
    """Top-k pre-activations (and top-k_aux among ``dead`` latents) with a sparse backward.

    Forward: one dense matmul in ``compute_dtype`` (in bfloat16, ~0.4 % relative error on the
    values, negligible for the loss). Backward: gradients only for the selected entries, via a sparse
    matmul — k/d_sae of the dense cost. Returns values and indices ``[batch, k + k_aux]``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, k: int, dead: Tensor,  # type: ignore[override]
                k_aux: int, apply_b_dec: bool, compute_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        xc = x - b_dec if apply_b_dec else x
        if compute_dtype == torch.float32:
            pre = torch.addmm(b_enc, xc, W_enc)  # [batch, d_sae]
        else:
            pre = (xc.to(compute_dtype) @ W_enc.to(compute_dtype)).float() + b_enc
        values, indices = pre.topk(k, dim=-1, sorted=False)
        if k_aux:
            dead_ids = dead.nonzero().squeeze(-1)
            aux_values, aux_pos = pre[:, dead_ids].topk(k_aux, dim=-1, sorted=False)
            values, indices = torch.cat([values, aux_values], -1), torch.cat([indices, dead_ids[aux_pos]], -1)
        ctx.save_for_backward(xc, W_enc, indices)
        ctx.apply_b_dec = apply_b_dec
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values: Tensor, _grad_indices: Tensor) -> tuple:  # type: ignore[override]
        xc, W_enc, indices = ctx.saved_tensors
        batch, width = indices.shape
        rows = torch.arange(batch, device=xc.device).repeat_interleave(width)
        grad_pre_t = torch.sparse_coo_tensor(torch.stack([indices.flatten(), rows]), grad_values.flatten(),
                                             (W_enc.shape[1], batch), check_invariants=False)  # [d_sae, batch]
        grad_W_enc = torch.sparse.mm(grad_pre_t, xc).T  # [d_in, d_sae]
        grad_b_enc = torch.zeros(W_enc.shape[1], device=xc.device).index_add_(0, indices.flatten(),
                                                                             grad_values.flatten())
        grad_b_dec = None
        if ctx.apply_b_dec:
            grad_xc = F.embedding_bag(indices, W_enc.T.contiguous(), per_sample_weights=grad_values, mode="sum")
            grad_b_dec = -grad_xc.sum(0)
        return None, grad_W_enc, grad_b_enc, grad_b_dec, None, None, None, None, None


def _fired(indices: Tensor, values: Tensor, d_sae: int) -> Tensor:
    fired = torch.zeros(d_sae, dtype=torch.bool, device=indices.device)
    fired[indices[values > 0]] = True
    return fired


def _batch_topk(pre: Tensor, sae: SAE, threshold: ThresholdTracker) -> Tensor:
    relu = F.relu(pre)
    n_keep = sae.cfg.k * pre.shape[0]
    flat_values, flat_indices = relu.flatten().topk(n_keep, sorted=False)
    feats = torch.zeros_like(relu.flatten()).scatter_(0, flat_indices, flat_values).view_as(relu)
    positive = flat_values.detach()[flat_values.detach() > 0]
    if len(positive):
        threshold.update(sae, positive.min())
    return feats


def _auxk(sae: SAE, pre: Tensor, residual: Tensor, dead: Tensor) -> Tensor:
    k_aux = min(sae.d_in // 2, int(dead.sum()))
    values, indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
    values = F.relu(values)
    residual_hat = F.embedding_bag(indices, sae.W_dec, per_sample_weights=values, mode="sum")
    return (residual_hat - residual).pow(2).sum() / residual.pow(2).sum().clamp_min(1e-12)


def _rectangle(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        grad_pre = grad * (pre > threshold)
        grad_threshold = -(threshold / ctx.bandwidth) * _rectangle((pre - threshold) / ctx.bandwidth) * grad
        return grad_pre, grad_threshold.sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        grad_threshold = -(1.0 / ctx.bandwidth) * _rectangle((pre - threshold) / ctx.bandwidth) * grad
        return None, grad_threshold.sum(0), None
