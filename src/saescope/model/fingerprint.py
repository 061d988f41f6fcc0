"""A fingerprint of a model's weights: what caches of its outputs are keyed by (bias scores, ROME key
statistics). Any change to any weight, even one entry in the middle of a matrix, changes it.

Hashing every weight takes ~9 s for the embedded model on 2 CPU cores, so the result is remembered
per model together with each parameter's storage and in-place version counter (``Tensor._version``,
which every in-place write such as a ``WeightEdit`` bumps): an edited model is hashed again."""

from __future__ import annotations

import hashlib

import torch

from saescope.model.loading import LoadedModel

_REMEMBERED: dict[int, tuple[tuple, str]] = {}


def model_fingerprint(lm: LoadedModel) -> str:
    """A hash of the model's name, dtype, and of every parameter: its first and last 64 values, its sum
    and its sum of squares (so an edit anywhere in a weight changes the key)."""
    state = (lm.name, str(lm.dtype), lm.device.type,
             tuple((p.data_ptr(), p._version) for p in lm.model.parameters()))
    remembered = _REMEMBERED.get(id(lm.model))
    if remembered is not None and remembered[0] == state:
        return remembered[1]
    fingerprint = _hash(lm)
    _REMEMBERED[id(lm.model)] = (state, fingerprint)
    return fingerprint


def _hash(lm: LoadedModel) -> str:
    digest = hashlib.sha256(f"{lm.name}|{lm.dtype}|{lm.device.type}".encode())
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            flat = param.detach().reshape(-1)
            digest.update(name.encode())
            moments = torch.stack([flat.double().sum(), flat.double().pow(2).sum()])
            digest.update(torch.cat([flat[:64].double(), flat[-64:].double(), moments]).cpu().numpy().tobytes())
    return digest.hexdigest()[:24]
