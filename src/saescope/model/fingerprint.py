"""A fingerprint of a model's weights: what caches of its outputs are keyed by (bias scores, ROME key
statistics). Any change to any weight, even one entry in the middle of a matrix, changes it."""

from __future__ import annotations

import hashlib

import torch

from saescope.model.loading import LoadedModel


def model_fingerprint(lm: LoadedModel) -> str:
    """A hash of the model's name, dtype, and of every parameter: its first and last 64 values, its sum
    and its sum of squares (so an edit anywhere in a weight changes the key)."""
    digest = hashlib.sha256(f"{lm.name}|{lm.dtype}|{lm.device.type}".encode())
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            flat = param.detach().reshape(-1)
            digest.update(name.encode())
            moments = torch.stack([flat.double().sum(), flat.double().pow(2).sum()])
            digest.update(torch.cat([flat[:64].double(), flat[-64:].double(), moments]).cpu().numpy().tobytes())
    return digest.hexdigest()[:24]
