"""Language-model side-effect metrics shared by SAE evaluation and intervention reports."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def next_token_logprobs_of(logits: Tensor) -> Tensor:
    """Log-softmax of the predictions for positions 1.. (``logits[:, :-1]``) in float32."""
    return F.log_softmax(logits[:, :-1].float(), -1)


def summed_ce(logp: Tensor, ids: Tensor) -> float:
    """Summed next-token cross-entropy of ``ids[:, 1:]`` under ``logp`` (from ``next_token_logprobs_of``)."""
    return float(-logp.gather(-1, ids[:, 1:, None]).sum())


def summed_kl(clean_logp: Tensor, logp: Tensor) -> float:
    """Summed KL(clean || other) over every predicted position."""
    return float((clean_logp.exp() * (clean_logp - logp)).sum())
