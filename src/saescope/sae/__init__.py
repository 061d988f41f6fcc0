"""Sparse autoencoders: the one ``SAE`` type, file formats, training objectives, activation
streaming, training, evaluation, and quick looks at what an SAE sees in a text."""

from saescope.sae.core import ACTIVATIONS, SAE, SAEConfig, sae_fingerprint

__all__ = ["ACTIVATIONS", "SAE", "SAEConfig", "sae_fingerprint"]
