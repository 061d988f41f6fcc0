"""Sparse autoencoders: the one ``SAE`` type, file formats, training objectives, activation
streaming, training, evaluation, and quick looks at what an SAE sees in a text.

Names are imported lazily (``from saescope.sae import SAE`` works; importing a light module of
this package, such as ``sae.train_config``, does not load torch)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ACTIVATIONS": "core", "SAE": "core", "SAEConfig": "core", "sae_fingerprint": "core"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saescope.sae' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"saescope.sae.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
