"""What an SAE sees in one text: its features per token, the most active ones and where they fire."""

from __future__ import annotations

import torch

from saescope.activations.read import hook_activations
from saescope.errors import SaescopeError, check_text
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE


@torch.no_grad()
def encode_text(lm: LoadedModel, sae: SAE, hook: str, text: str) -> tuple[list[str], torch.Tensor]:
    """Tokens of ``text`` and their feature activations ``[seq, d_sae]`` (attention sinks zeroed).

    Example::

        tokens, feats = encode_text(lm, sae, "blocks.12.hook_resid_post", "The nurse said")
    """
    check_text(text, "text")
    ids = torch.tensor([lm.encode(text)], device=lm.device)
    acts, keep = hook_activations(lm, hook, ids)
    feats = sae.encode(acts[0].float())  # [seq, d_sae]
    feats[~keep[0]] = 0.0
    tokens = [lm.tokenizer.decode([int(t)]) for t in ids[0]]
    return tokens, feats


def top_features_of_text(lm: LoadedModel, sae: SAE, hook: str, text: str, n: int = 10) -> list[dict]:
    """The ``n`` features with the largest activation anywhere in ``text`` (after the first token).

    Each row: ``feature``, ``max_activation``, ``max_token``, ``tokens`` (where it fires, strongest first).
    """
    if n <= 0:
        raise SaescopeError(f"n must be positive, got {n}")
    tokens, feats = encode_text(lm, sae, hook, text)
    peak, where = feats.max(dim=0)  # [d_sae]
    rows = []
    for feature in peak.argsort(descending=True)[:n].tolist():
        if peak[feature] <= 0:
            break
        column = feats[:, feature]
        firing = [i for i in column.argsort(descending=True).tolist() if column[i] > 0]
        rows.append({"feature": feature, "max_activation": float(peak[feature]),
                     "max_token": tokens[int(where[feature])], "tokens": [tokens[i] for i in firing]})
    return rows
