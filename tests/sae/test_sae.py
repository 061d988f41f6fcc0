"""The SAE module: activations, sparse decode, scale folding, and the sparse TopK backward."""

import pytest
import torch
import torch.nn.functional as F

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.objectives import _SparseTopKEncode, objective


def _random_sae(activation: str, d_in: int = 16, d_sae: int = 64, k: int | None = 4, seed: int = 0) -> SAE:
    torch.manual_seed(seed)
    sae = SAE(SAEConfig(d_in, d_sae, activation, k if activation in ("topk", "batchtopk") else None))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        if sae.threshold is not None:
            sae.threshold.fill_(0.2)
    return sae


def test_topk_has_exactly_k_active_and_matches_dense_decode():
    sae = _random_sae("topk", k=4)
    x = torch.randn(10, 16) * 3
    feats = sae.encode(x)
    assert ((feats > 0).sum(-1) <= 4).all() and ((feats > 0).sum(-1) == 4).sum() >= 8
    values, indices = feats.topk(4, dim=-1)
    torch.testing.assert_close(sae.decode_sparse(values, indices), sae.decode(feats))


def test_jumprelu_zeroes_below_threshold_and_relu_is_nonnegative():
    sae = _random_sae("jumprelu")
    pre = sae.encode_pre(torch.randn(20, 16))
    feats = sae.encode(torch.randn(20, 16))
    assert (feats[feats != 0] > 0.2).all()
    relu = _random_sae("relu")
    assert (relu.encode(torch.randn(5, 16)) >= 0).all()
    assert pre.shape == (20, 64)


def test_fold_input_scale_gives_same_features_up_to_scale():
    sae = _random_sae("topk")
    x = torch.randn(8, 16)
    scale = 3.7
    feats_scaled, recon_scaled = sae.encode(x * scale), sae(x * scale)
    sae.fold_input_scale(scale)
    torch.testing.assert_close(sae.encode(x), feats_scaled / scale, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), recon_scaled / scale, rtol=1e-5, atol=1e-5)


def test_bad_config_and_bad_input_raise_clear_errors():
    with pytest.raises(SaescopeError, match="unknown SAE activation"):
        SAEConfig(4, 8, "gelu")
    with pytest.raises(SaescopeError, match="k"):
        SAEConfig(4, 8, "topk", k=0)
    sae = _random_sae("relu")
    with pytest.raises(SaescopeError, match="d_in=16"):
        sae.encode(torch.randn(2, 15))
    with pytest.raises(SaescopeError, match="out of range"):
        sae.check_feature(64)


def test_sparse_topk_backward_matches_dense_autograd():
    sae = _random_sae("topk", d_in=32, d_sae=128, k=8)
    x = torch.randn(64, 32)
    dead = torch.zeros(128, dtype=torch.bool)
    dead[:40] = True
    result = objective(sae, x, dead, 0.0, 1 / 32)
    result.loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    # the same loss through dense autograd, on the same selected latents
    values, indices = _SparseTopKEncode.apply(x, sae.W_enc, sae.b_enc, sae.b_dec, 8, dead, 16, True)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    chosen = F.relu(pre.gather(1, indices))
    recon = sae.decode_sparse(chosen[:, :8], indices[:, :8])
    fvu = (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    residual = x - recon.detach()
    residual_hat = F.embedding_bag(indices[:, 8:], sae.W_dec, per_sample_weights=chosen[:, 8:], mode="sum")
    loss = fvu + (residual_hat - residual).pow(2).sum() / residual.pow(2).sum() / 32
    loss.backward()
    for name, param in sae.named_parameters():
        rel = (param.grad - sparse_grads[name]).norm() / param.grad.norm()
        assert rel < 1e-2, name  # bf16 forward: ~1e-3


@pytest.mark.parametrize("activation", ["batchtopk", "relu", "jumprelu"])
def test_other_objectives_give_finite_gradients_for_every_parameter(activation):
    sae = _random_sae(activation, k=4)
    x = torch.randn(32, 16) * 2
    result = objective(sae, x, torch.zeros(64, dtype=torch.bool), 1e-3, 1 / 32)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert sae.W_enc.grad is not None and torch.isfinite(sae.W_enc.grad).all()
    if activation == "jumprelu":
        assert sae.threshold.grad is not None
