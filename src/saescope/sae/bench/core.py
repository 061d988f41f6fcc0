"""SAEBench's ``core`` eval on our evaluation pass (``sae.evaluation.evaluate_sae``).

Same categories and metric names as SAEBench v0.6 (``model_behavior_preservation``,
``model_performance_preservation``, ``reconstruction_quality``, ``shrinkage``, ``sparsity``,
``token_stats``, ``misc_metrics``), with these decisions:

- **CE-loss score with zero ablation**, as SAEBench (the hook's output replaced by zeros).
- **explained_variance is mean-centred and pooled** (1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over every token).
  SAEBench v0.6's ``explained_variance`` measured variance around zero, which SAELens fixed in
  6.45.1 (#665); that figure is written too, as ``explained_variance_legacy``, and
  ``eval_result_unstructured`` says which is which.
- **frac_alive over the tokens evaluated** (default 50,000, not SAEBench's 2,048 windows' worth of
  sparsity batches, which it calls an underestimate); the token count is in ``token_stats``.
- Attention sinks (position 0 and norm outliers) are neither measured nor replaced, as in every
  statistic of saescope; SAEBench excludes special tokens only.
- Per-feature details: ``feature_density``, ``consistent_activation_heuristic``, ``encoder_bias``,
  ``encoder_norm``, ``encoder_decoder_cosine_sim``; ``misc_metrics``: ``freq_over_1_percent``,
  ``freq_over_10_percent``, ``normalized_freq_over_1_percent`` (the share of activations carried by
  features denser than 1 %), ``average_max_encoder_cosine_sim``, ``average_max_decoder_cosine_sim``,
  ``frac_alive``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.sae.evaluation import evaluate_sae


def max_other_cosine(rows: Tensor, chunk: int = 1024) -> Tensor:
    """For each row, the largest cosine with any other row (chunked: no [n, n] matrix at once)."""
    unit = torch.nn.functional.normalize(rows.float(), dim=-1)
    out = torch.empty(len(unit))
    for start in range(0, len(unit), chunk):
        sims = unit[start:start + chunk] @ unit.T
        sims[torch.arange(len(sims)), torch.arange(start, start + len(sims))] = -1.0
        out[start:start + chunk] = sims.max(-1).values.cpu()
    return out


def core_eval(lm: LoadedModel, sae: SAE, tokens: int = 50_000, progress: bool = False) -> tuple[dict, list, dict]:
    """``(eval_result_metrics, eval_result_details, eval_result_unstructured)`` of SAEBench's core eval."""
    m = evaluate_sae(lm, sae, tokens=tokens, progress=progress)
    density = m.details["density"]
    w_enc, w_dec = sae.W_enc.detach().float().cpu(), sae.W_dec.detach().float().cpu()  # [d_in, d_sae], [d_sae, d_in]
    total = float(density.sum())
    metrics: dict[str, dict[str, Any]] = {
        "model_behavior_preservation": {"kl_div_score": m.kl_div_score, "kl_div_with_ablation": m.kl_div_with_ablation,
                                        "kl_div_with_sae": m.kl_div_with_sae},
        "model_performance_preservation": {"ce_loss_score": m.ce_loss_score, "ce_loss_with_ablation": m.ce_loss_zero_ablated,
                                           "ce_loss_with_sae": m.ce_loss_spliced, "ce_loss_without_sae": m.ce_loss_clean},
        "reconstruction_quality": {"explained_variance": m.explained_variance,
                                   "explained_variance_legacy": m.explained_variance_around_zero,
                                   "mse": m.mse, "cossim": m.cossim},
        "shrinkage": {"l2_norm_in": m.l2_norm_in, "l2_norm_out": m.l2_norm_out, "l2_ratio": m.l2_ratio,
                      "relative_reconstruction_bias": m.relative_reconstruction_bias},
        "sparsity": {"l0": m.l0, "l1": m.l1},
        "token_stats": {"total_tokens_eval_reconstruction": m.n_tokens, "total_tokens_eval_sparsity_variance": m.n_tokens},
        "misc_metrics": {
            "freq_over_1_percent": float((density > 0.01).float().mean()),
            "freq_over_10_percent": float((density > 0.1).float().mean()),
            "normalized_freq_over_1_percent": float(density[density > 0.01].sum()) / total if total else 0.0,
            "average_max_encoder_cosine_sim": float(max_other_cosine(w_enc.T).mean()),
            "average_max_decoder_cosine_sim": float(max_other_cosine(w_dec).mean()),
            "frac_alive": 1.0 - m.dead_fraction},
    }
    cosine = torch.nn.functional.cosine_similarity(w_enc.T, w_dec, dim=-1)
    bias = sae.b_enc.detach().float().cpu()
    details = [{"index": i, "feature_density": float(density[i]),
                "consistent_activation_heuristic": float(m.details["tokens_per_active_window"][i]),
                "encoder_bias": float(bias[i]), "encoder_norm": float(w_enc[:, i].norm()),
                "encoder_decoder_cosine_sim": float(cosine[i])} for i in range(sae.d_sae)]
    unstructured = {"explained_variance": "1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2 over all tokens (mean-centred, pooled)",
                    "explained_variance_legacy": "1 - sum|x - x_hat|^2 / sum|x|^2: variance around zero, SAEBench v0.6's "
                                                 "definition (SAELens fixed the same bug in 6.45.1, #665)",
                    "excluded_tokens": "attention sinks (position 0 and norm outliers), as every saescope statistic",
                    "hook_name": m.hook_name}
    return metrics, details, unstructured
