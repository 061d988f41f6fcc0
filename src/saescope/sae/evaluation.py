"""Standard SAE evaluation on held-out text, with SAELens's metric names (``saescope sae eval``).

Definitions (over all evaluated tokens except attention sinks — position 0 and tokens with a
norm > 10x the median, see ``activations.sink_mask`` — which are neither measured nor replaced):
- ``l0``: mean number of active features per token; ``dead_fraction``: share of features that
  never fire on the evaluated tokens.
- ``mse``: mean squared error per element; ``fvu`` = Σ‖x − x̂‖² / Σ‖x − x̄‖² (x̄ the mean over all
  tokens, pooled); ``explained_variance`` = 1 − fvu (mean-centred and pooled, as SAELens since
  6.45.1). ``explained_variance_around_zero`` = 1 − Σ‖x − x̂‖² / Σ‖x‖²: the variance around zero, the
  definition SAEBench v0.6's ``explained_variance`` used (an overestimate whenever x̄ ≠ 0).
- ``l1``: mean summed feature activation per token; ``cossim``: mean cosine of x̂ with x;
  ``l2_norm_in`` / ``l2_norm_out``: mean ‖x‖ and ‖x̂‖, ``l2_ratio`` = mean of ‖x̂‖/‖x‖;
  ``relative_reconstruction_bias`` = E[x̂·x̂] / E[x̂·x] (1: no shrinkage; Wright & Sharkey's γ).
- ``details`` (not in ``to_dict``): per feature, ``density`` (share of tokens it fires on) and
  ``tokens_per_active_window`` (SAEBench's consistent-activation heuristic: tokens it fires on in a
  window where it fires at all).
- ``ce_loss_clean`` / ``ce_loss_spliced`` / ``ce_loss_zero_ablated``: next-token cross-entropy of
  the model as is, with the SAE reconstruction spliced in at the hook, and with the hook zeroed.
  ``ce_loss_score`` = (zero − spliced) / (zero − clean), the fraction of CE loss recovered.
- ``kl_div_with_sae`` / ``kl_div_with_ablation``: mean per-token KL(clean ‖ patched);
  ``kl_div_score`` = (ablation − sae) / ablation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.activations.read import sink_mask
from saescope.corpus import first_windows
from saescope.errors import SaescopeError
from saescope.model.hooks import capture, intervene
from saescope.model.likelihood import next_token_logprobs_of, summed_ce, summed_kl
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE


@dataclass
class SAEEvaluation:
    """The metrics of one evaluation; ``to_dict()`` gives the JSON printed by the CLI."""

    l0: float
    mse: float
    fvu: float
    explained_variance: float
    ce_loss_clean: float
    ce_loss_spliced: float
    ce_loss_zero_ablated: float
    ce_loss_score: float
    kl_div_with_sae: float
    kl_div_with_ablation: float
    kl_div_score: float
    dead_fraction: float
    n_tokens: int
    hook_name: str
    model: str
    l1: float = float("nan")
    cossim: float = float("nan")
    l2_norm_in: float = float("nan")
    l2_norm_out: float = float("nan")
    l2_ratio: float = float("nan")
    relative_reconstruction_bias: float = float("nan")
    explained_variance_around_zero: float = float("nan")
    details: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, float | int | str]:
        return {k: v for k, v in asdict(self).items() if k != "details"}


@torch.no_grad()
def evaluate_sae(lm: LoadedModel, sae: SAE, hook: str | None = None, tokens: int = 50_000,
                 corpus: str = "embedded", split: str = "heldout", context: int = 128, batch_size: int = 8,
                 progress: bool = True) -> SAEEvaluation:
    """Evaluate ``sae`` at its hook point on ``tokens`` held-out tokens.

    Example::

        metrics = evaluate_sae(lm, load_sae("default"), tokens=20_000)
        metrics.fvu, metrics.ce_loss_score
    """
    if sae.cfg.metadata.get("kind") == "transcoder":
        raise SaescopeError("this is a transcoder (it reconstructs the MLP's output, not its input): use "
                            "sae.transcoder_eval.evaluate_layer (what `saescope sae eval` runs for it) or "
                            "evaluate_transcoders for its set")
    hook = lm.check_sae(sae, hook)
    if tokens <= 0:
        raise SaescopeError(f"tokens must be positive, got {tokens}")
    windows = first_windows(lm.tokenizer, tokens, split, corpus, context)
    totals = _Totals(sae.d_sae, lm.device)
    for start in tqdm(range(0, len(windows), batch_size), disable=not progress, desc="eval SAE", unit="batch"):
        ids = windows[start:start + batch_size].to(lm.device)
        _evaluate_batch(lm, sae, hook, ids, totals)
    return totals.result(hook, lm.name)


def log_heldout(lm: LoadedModel, sae: SAE, hook: str, tokens: int, where: dict, path: Path) -> dict:
    """``sae train --eval-every``: the headline metrics of ``sae`` on ``tokens`` held-out tokens, appended
    to ``path`` as one JSON line after ``where`` (step and tokens seen)."""
    result = evaluate_sae(lm, sae, hook, tokens=tokens, progress=False).to_dict()
    line = {**where, **{k: result[k] for k in ("fvu", "explained_variance", "l0", "ce_loss_score", "kl_div_score",
                                               "dead_fraction", "n_tokens")}}
    with path.open("a") as log:
        log.write(json.dumps(line) + "\n")
    return line


def _evaluate_batch(lm: LoadedModel, sae: SAE, hook: str, ids: Tensor, totals: _Totals) -> None:
    with capture(lm.model, [hook]) as captured:
        clean_logits = lm.model(input_ids=ids).logits.float()  # [batch, seq, vocab]
    keep = ~sink_mask(captured[hook])  # [batch, seq]
    acts = captured[hook][keep].float()  # [n_kept, d]
    feats = sae.encode(acts)
    recon = sae.decode(feats)
    totals.add_reconstruction(acts, recon, feats)
    totals.add_windows(feats, keep)

    def splice(values: Tensor):
        def patch(a: Tensor) -> Tensor:
            out = a.clone()
            out[keep] = values.to(a.dtype)
            return out
        return patch

    with intervene(lm.model, {hook: splice(recon)}):
        spliced_logits = lm.model(input_ids=ids).logits.float()
    with intervene(lm.model, {hook: splice(torch.zeros_like(recon))}):
        zero_logits = lm.model(input_ids=ids).logits.float()
    clean_logp = next_token_logprobs_of(clean_logits)
    for name, logits in (("clean", clean_logits), ("spliced", spliced_logits), ("zero", zero_logits)):
        logp = next_token_logprobs_of(logits)
        totals.ce[name] += summed_ce(logp, ids)
        if name != "clean":
            totals.kl[name] += summed_kl(clean_logp, logp)
    totals.n_predictions += ids[:, 1:].numel()


class _Totals:
    def __init__(self, d_sae: int, device: torch.device) -> None:
        self.n_tokens = 0
        self.n_predictions = 0
        self.sq_error = 0.0
        self.sum_x: Tensor | None = None
        self.sum_sq_x = 0.0
        self.active = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
        self.counts = torch.zeros(d_sae, dtype=torch.float64, device=device)  # tokens each feature fires on
        self.windows = torch.zeros(d_sae, dtype=torch.float64, device=device)  # windows it fires in
        self.sums = {"l1": 0.0, "cossim": 0.0, "norm_in": 0.0, "norm_out": 0.0, "ratio": 0.0, "out_out": 0.0,
                     "out_in": 0.0}
        self.ce = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
        self.kl = {"spliced": 0.0, "zero": 0.0}
        self.d_in = 0

    def add_reconstruction(self, acts: Tensor, recon: Tensor, feats: Tensor) -> None:
        flat = acts.reshape(-1, acts.shape[-1])
        self.d_in = flat.shape[-1]
        self.n_tokens += len(flat)
        self.sq_error += float((recon - acts).pow(2).sum())
        self.sum_x = flat.sum(0) if self.sum_x is None else self.sum_x + flat.sum(0)
        self.sum_sq_x += float(flat.pow(2).sum())
        active = feats.reshape(-1, feats.shape[-1]) > 0
        self.active += float(active.sum())
        self.fired |= active.any(0)
        self.counts += active.sum(0)
        out = recon.reshape(-1, recon.shape[-1])
        norm_in, norm_out = flat.norm(dim=-1), out.norm(dim=-1)
        self.sums["l1"] += float(feats.abs().sum())
        self.sums["cossim"] += float(torch.nn.functional.cosine_similarity(out, flat, dim=-1).sum())
        self.sums["norm_in"] += float(norm_in.sum())
        self.sums["norm_out"] += float(norm_out.sum())
        self.sums["ratio"] += float((norm_out / norm_in.clamp_min(1e-12)).sum())
        self.sums["out_out"] += float((out * out).sum())
        self.sums["out_in"] += float((out * flat).sum())

    def add_windows(self, feats: Tensor, keep: Tensor) -> None:
        """Count, per feature, the windows (rows of ``keep``) it fires in at least once."""
        window = torch.arange(len(keep), device=keep.device)[:, None].expand_as(keep)[keep]
        per_window = torch.zeros(len(keep), feats.shape[-1], device=feats.device)
        per_window.index_add_(0, window, (feats > 0).float())
        self.windows += (per_window > 0).sum(0)

    def result(self, hook: str, model: str) -> SAEEvaluation:
        total_variance = self.sum_sq_x - float(self.sum_x.pow(2).sum()) / self.n_tokens
        fvu = self.sq_error / total_variance
        ce = {k: v / self.n_predictions for k, v in self.ce.items()}
        kl = {k: v / self.n_predictions for k, v in self.kl.items()}
        ce_gap = ce["zero"] - ce["clean"]
        return SAEEvaluation(
            l0=self.active / self.n_tokens, mse=self.sq_error / (self.n_tokens * self.d_in), fvu=fvu,
            explained_variance=1 - fvu, ce_loss_clean=ce["clean"], ce_loss_spliced=ce["spliced"],
            ce_loss_zero_ablated=ce["zero"],
            ce_loss_score=(ce["zero"] - ce["spliced"]) / ce_gap if ce_gap else float("nan"),
            kl_div_with_sae=kl["spliced"], kl_div_with_ablation=kl["zero"],
            kl_div_score=(kl["zero"] - kl["spliced"]) / kl["zero"] if kl["zero"] else float("nan"),
            dead_fraction=float((~self.fired).float().mean()), n_tokens=self.n_tokens, hook_name=hook, model=model,
            l1=self.sums["l1"] / self.n_tokens, cossim=self.sums["cossim"] / self.n_tokens,
            l2_norm_in=self.sums["norm_in"] / self.n_tokens, l2_norm_out=self.sums["norm_out"] / self.n_tokens,
            l2_ratio=self.sums["ratio"] / self.n_tokens,
            relative_reconstruction_bias=self.sums["out_out"] / self.sums["out_in"] if self.sums["out_in"] else float("nan"),
            explained_variance_around_zero=1 - self.sq_error / self.sum_sq_x,
            details={"density": (self.counts / self.n_tokens).float().cpu(),
                     "tokens_per_active_window": (self.counts / self.windows.clamp_min(1)).float().cpu()})
