"""SAE evaluation: known answers with an exact SAE and with a zero SAE."""

import pytest
import torch

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.evaluation import evaluate_sae


def _exact_sae(d: int) -> SAE:
    """relu(x) - relu(-x) = x: an SAE that reconstructs every input exactly."""
    sae = SAE(SAEConfig(d, 2 * d, "relu", hook_name="blocks.4.hook_resid_post", apply_b_dec_to_input=False))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_exact_sae_recovers_everything(lm):
    m = evaluate_sae(lm, _exact_sae(lm.d_model), tokens=512, context=64, progress=False)
    assert m.fvu == pytest.approx(0.0, abs=1e-6) and m.explained_variance == pytest.approx(1.0, abs=1e-6)
    assert m.ce_loss_spliced == pytest.approx(m.ce_loss_clean, abs=1e-3)
    assert m.ce_loss_score == pytest.approx(1.0, abs=1e-3) and m.kl_div_score == pytest.approx(1.0, abs=1e-4)
    assert m.ce_loss_zero_ablated > m.ce_loss_clean + 0.5
    assert 8 * 60 <= m.n_tokens <= 8 * 63 and 0 < m.l0 <= lm.d_model and m.dead_fraction < 0.5


def test_zero_sae_scores_zero(lm):
    sae = _exact_sae(lm.d_model)
    with torch.no_grad():
        sae.W_dec.zero_()
    m = evaluate_sae(lm, sae, tokens=256, context=64, progress=False)
    assert m.ce_loss_spliced == pytest.approx(m.ce_loss_zero_ablated, abs=1e-4)
    assert m.ce_loss_score == pytest.approx(0.0, abs=1e-4) and m.kl_div_score == pytest.approx(0.0, abs=1e-4)
    assert m.fvu > 0.99


def test_evaluation_rejects_mismatched_sae(lm):
    with pytest.raises(SaescopeError, match="d_in=8"):
        evaluate_sae(lm, SAE(SAEConfig(8, 16, "relu", hook_name="blocks.1.hook_resid_post")), tokens=64)
    with pytest.raises(SaescopeError, match="positive"):
        evaluate_sae(lm, _exact_sae(lm.d_model), tokens=0)
