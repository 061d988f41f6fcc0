"""Sparse autoencoders: the one ``SAE`` type, file formats, training objectives, activation
streaming, training, evaluation, and quick looks at what an SAE sees in a text.

Names are imported lazily (``from saescope.sae import SAE`` works; importing a light module of
this package, such as ``sae.train_config``, does not load torch)."""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"ACTIVATIONS": "core", "SAE": "core", "SAEConfig": "core", "sae_fingerprint": "core"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.sae", {name: f"saescope.sae.{module}" for name, module in _EXPORTS.items()})
