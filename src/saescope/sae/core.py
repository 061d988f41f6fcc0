"""One sparse autoencoder type; the activation function (topk, batchtopk, relu, jumprelu) is a field.

Parameters use SAELens names and layout: ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec``
[d_sae, d_in], ``b_dec`` [d_in], ``threshold`` [d_sae] (jumprelu, and batchtopk at inference), and for a
skip transcoder (``skip=True``; Paulo, Shabalin & Belrose 2025) ``W_skip`` [d_in, d_in], a linear map of the input
added to the output: ``forward(x) = decode(encode(x)) + skip(x)``.
Encoding follows SAELens: ``pre = (x - b_dec·apply_b_dec_to_input) @ W_enc + b_enc``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saescope.errors import SaescopeError

ACTIVATIONS = ("topk", "batchtopk", "relu", "jumprelu")


@dataclass
class SAEConfig:
    """What defines an SAE; saved as ``cfg.json`` (SAELens layout) beside the weights."""

    d_in: int
    d_sae: int
    activation: str = "topk"
    k: int | None = None
    hook_name: str | None = None
    model_name: str | None = None
    apply_b_dec_to_input: bool = True
    skip: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise SaescopeError(f"unknown SAE activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if self.activation in ("topk", "batchtopk") and not (self.k and 0 < self.k <= self.d_sae):
            raise SaescopeError(f"{self.activation} needs 0 < k <= d_sae, got k={self.k}, d_sae={self.d_sae}")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise SaescopeError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SAE(nn.Module):
    """A sparse autoencoder over one hook point's activations.

    Example::

        sae = SAE(SAEConfig(d_in=576, d_sae=4608, activation="topk", k=32))
        feats = sae.encode(acts)          # [..., d_sae], sparse, non-negative
        recon = sae.decode(feats)         # [..., d_in]
    """

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.activation in ("jumprelu", "batchtopk"):
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))
        else:
            self.register_parameter("threshold", None)
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_in))
        else:
            self.register_parameter("W_skip", None)
        self.reset_parameters()

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random unit-norm decoder rows, encoder = decoder transposed, zero biases (Gao et al. 2024)."""
        with torch.no_grad():
            w = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator)
            self.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
            self.W_enc.copy_(self.W_dec.T)
            self.b_enc.zero_()
            self.b_dec.zero_()
            if self.W_skip is not None:
                self.W_skip.zero_()

    def encode_pre(self, x: Tensor) -> Tensor:
        """Pre-activations ``[..., d_sae]``."""
        if x.shape[-1] != self.cfg.d_in:
            raise SaescopeError(f"SAE expects inputs of width d_in={self.cfg.d_in}, got {x.shape[-1]}")
        x = x.to(self.W_enc.dtype)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return F.linear(x, self.W_enc.T, self.b_enc)  # x @ W_enc + b_enc, the bias added inside the GEMM

    def activate(self, pre: Tensor) -> Tensor:
        """Apply the activation function to pre-activations (inference form)."""
        act = self.cfg.activation
        if act == "relu":
            return F.relu(pre)
        if act == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, indices, F.relu(values))
        # jumprelu, and batchtopk at inference (its learned global threshold)
        return pre * (pre > self.threshold)

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations ``[..., d_sae]`` for inputs ``[..., d_in]``."""
        return self.activate(self.encode_pre(x))

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Non-zero activations of ``x`` [n, d_in] as ``(rows, features, values)``, without a dense
        [n, d_sae] tensor for TopK SAEs. Example::

            rows, feats, vals = sae.encode_sparse(acts.reshape(-1, sae.d_in))
        """
        pre = self.encode_pre(x)
        if self.cfg.activation == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            values = F.relu(values)
            rows = torch.arange(len(x), device=x.device).repeat_interleave(self.cfg.k)
            nonzero = values.flatten() > 0
            return rows[nonzero], indices.flatten()[nonzero], values.flatten()[nonzero]
        dense = self.activate(pre)
        rows, cols = dense.nonzero(as_tuple=True)
        return rows, cols, dense[rows, cols]

    def decode(self, feats: Tensor) -> Tensor:
        """Reconstruction ``[..., d_in]`` from feature activations ``[..., d_sae]``."""
        return feats @ self.W_dec + self.b_dec

    def decode_sparse(self, values: Tensor, indices: Tensor) -> Tensor:
        """Reconstruction from the k active features of each row: ``values``/``indices`` [n, k].

        Costs n·k·d_in instead of n·d_sae·d_in. Example::

            v, i = sae.encode_pre(x).topk(32); recon = sae.decode_sparse(v.relu(), i)
        """
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum") + self.b_dec

    def skip(self, x: Tensor) -> Tensor:
        """The skip connection's part of the output, ``x @ W_skip`` (a zero scalar without one)."""
        if self.W_skip is None:
            return x.new_zeros(())
        return x.to(self.W_skip.dtype) @ self.W_skip

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)) + self.skip(x)

    def decoder_directions(self) -> Tensor:
        """Unit-norm decoder directions ``[d_sae, d_in]``."""
        return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Turn an SAE trained on ``scale·x`` into one that takes raw ``x`` (same features / scale).

        Keeps decoder rows unit-norm; feature activations come out in raw-activation units.
        """
        self.b_enc.div_(scale)
        self.b_dec.div_(scale)
        if self.threshold is not None:
            self.threshold.div_(scale)

    def check_feature(self, feature: int) -> int:
        """Raise a clear error unless ``0 <= feature < d_sae``."""
        return check_feature_id(feature, self.cfg.d_sae, "this SAE")


def check_feature_id(feature: int, d_sae: int, owner: str) -> int:
    """``int(feature)`` if ``0 <= feature < d_sae``; else a ``SaescopeError`` naming ``owner``."""
    if not 0 <= int(feature) < d_sae:
        raise SaescopeError(f"feature {feature} is out of range: {owner} has {d_sae} features (0-{d_sae - 1})")
    return int(feature)


def sae_fingerprint(sae: SAE) -> str:
    """A short hash of the SAE's shape and decoder, to tell RUNs and interventions of different SAEs apart."""
    digest = hashlib.sha256(f"{sae.d_in}:{sae.d_sae}:{sae.cfg.activation}".encode())
    digest.update(sae.W_dec.detach()[:, :16].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_sae(cfg: SAEConfig, tensors: dict[str, torch.Tensor], source: str) -> SAE:
    """An SAE of ``cfg`` with the weights ``tensors`` (SAELens names and layout), checked: a one-line error
    naming ``source`` for a missing tensor, a wrong shape, or a NaN/inf."""
    sae = SAE(cfg)
    expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    for name, shape in expected.items():
        if name not in tensors:
            raise SaescopeError(f"{source} has no tensor {name!r} (expected {sorted(expected)})")
        if tuple(tensors[name].shape) != shape:
            raise SaescopeError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, expected {shape} "
                                f"from d_in={cfg.d_in}, d_sae={cfg.d_sae}")
    with torch.no_grad():
        for name, param in sae.named_parameters():
            value = tensors[name].to(torch.float32)
            if not torch.isfinite(value).all():
                raise SaescopeError(f"{source}: {name} contains NaN or inf")
            param.copy_(value)
    return sae
