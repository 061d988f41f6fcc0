"""Standard SAE evaluation on held-out text, with SAELens's metric names (``saescope sae eval``).

Definitions (over all evaluated tokens except attention sinks — position 0 and tokens with a
norm > 10x the median, see ``activations.sink_mask`` — which are neither measured nor replaced):
- ``l0``: mean number of active features per token; ``dead_fraction``: share of features that
  never fire on the evaluated tokens.
- ``mse``: mean squared error per element; ``fvu`` = Σ‖x − x̂‖² / Σ‖x − x̄‖² (x̄ the mean over all
  tokens); ``explained_variance`` = 1 − fvu.
- ``ce_loss_clean`` / ``ce_loss_spliced`` / ``ce_loss_zero_ablated``: next-token cross-entropy of
  the model as is, with the SAE reconstruction spliced in at the hook, and with the hook zeroed.
  ``ce_loss_score`` = (zero − spliced) / (zero − clean), the fraction of CE loss recovered.
- ``kl_div_with_sae`` / ``kl_div_with_ablation``: mean per-token KL(clean ‖ patched);
  ``kl_div_score`` = (ablation − sae) / ablation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@torch.no_grad()
def evaluate_sae(lm: LoadedModel, sae: SAE, hook: str | None = None, tokens: int = 50_000,
                 corpus: str = "embedded", split: str = "heldout", context: int = 128, batch_size: int = 8,
                 progress: bool = True) -> SAEEvaluation:
    """Evaluate ``sae`` at its hook point on ``tokens`` held-out tokens.

    Example::

        metrics = evaluate_sae(lm, load_sae("default"), tokens=20_000)
        metrics.fvu, metrics.ce_loss_score
    """
    hook = lm.check_sae(sae, hook)
    if tokens <= 0:
        raise SaescopeError(f"tokens must be positive, got {tokens}")
    windows = first_windows(lm.tokenizer, tokens, split, corpus, context)
    totals = _Totals(sae.d_sae, lm.device)
    for start in tqdm(range(0, len(windows), batch_size), disable=not progress, desc="eval SAE", unit="batch"):
        ids = windows[start:start + batch_size].to(lm.device)
        _evaluate_batch(lm, sae, hook, ids, totals)
    return totals.result(hook, lm.name)


def _evaluate_batch(lm: LoadedModel, sae: SAE, hook: str, ids: Tensor, totals: _Totals) -> None:
    with capture(lm.model, [hook]) as captured:
        clean_logits = lm.model(input_ids=ids).logits.float()  # [batch, seq, vocab]
    keep = ~sink_mask(captured[hook])  # [batch, seq]
    acts = captured[hook][keep].float()  # [n_kept, d]
    feats = sae.encode(acts)
    recon = sae.decode(feats)
    totals.add_reconstruction(acts, recon, feats)

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
            dead_fraction=float((~self.fired).float().mean()), n_tokens=self.n_tokens, hook_name=hook, model=model)
