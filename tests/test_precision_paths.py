"""The ``precision`` tier: the same checks in whatever precision ``--dtype auto`` means in this run.

`make test` runs this tier twice: once with ``SAESCOPE_AUTO_DTYPE=float32`` (the whole suite's setting,
tests/conftest.py) and once with ``SAESCOPE_AUTO_DTYPE=bfloat16``, so the bfloat16 paths a native-bf16
CPU takes are checked on every machine. Tiny random models keep it fast where bfloat16 is emulated.
Tolerances are per precision: bfloat16 keeps 8 bits of mantissa (relative error ~4e-3 per rounding).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from helpers import saescope, tiny_model
from saescope.model.hooks import capture
from saescope.model.likelihood import ce_and_kl, next_token_logprobs_of
from saescope.model.loading import LoadedModel
from saescope.precision import DTYPES, MEASURE, resolve_dtype
from saescope.sae.core import SAE, SAEConfig
from saescope.steering import FeatureEdit, FeatureSteering, VectorSteering

pytestmark = pytest.mark.precision

DTYPE = resolve_dtype("auto")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}[DTYPE]
AUTO_DTYPE = os.environ["SAESCOPE_AUTO_DTYPE"]  # set by tests/conftest.py unless the run forces it
FAMILIES = ["gpt2", "qwen2"]


def test_auto_is_what_this_run_forces_and_measurements_stay_float32():
    assert DTYPE is DTYPES[AUTO_DTYPE]
    assert resolve_dtype("auto", purpose=MEASURE) is torch.float32


def _lm(family: str, dtype: torch.dtype = DTYPE) -> LoadedModel:
    return LoadedModel(tiny_model(family).to(dtype), tokenizer=None, name=family)


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_residual_is_the_models_hidden_state(family):
    lm = _lm(family)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    hook = "blocks.0.hook_resid_post"  # the last block's hidden state is reported after the final norm
    with torch.no_grad(), capture(lm.model, [hook]) as acts:
        out = lm.model(input_ids=ids, output_hidden_states=True)
    assert acts[hook].dtype is DTYPE
    torch.testing.assert_close(acts[hook], out.hidden_states[1], rtol=0, atol=0)  # the same tensor, any precision


@pytest.mark.parametrize("family", FAMILIES)
def test_steering_adds_its_vector_in_the_models_precision(family):
    lm = _lm(family)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    vector = torch.randn(32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), capture(lm.model, ["blocks.0.hook_resid_post"]) as plain:
        lm.model(input_ids=ids)
    with torch.no_grad(), VectorSteering("blocks.0.hook_resid_post", vector, coeff=3.0).apply(lm), \
            capture(lm.model, ["blocks.0.hook_resid_post"]) as steered:
        lm.model(input_ids=ids)
    delta = (steered["blocks.0.hook_resid_post"].float() - plain["blocks.0.hook_resid_post"].float())
    assert steered["blocks.0.hook_resid_post"].dtype is DTYPE
    scale = plain["blocks.0.hook_resid_post"].float().abs().max() + 3 * vector.abs().max()
    torch.testing.assert_close(delta, (3.0 * vector).expand_as(delta), rtol=0, atol=float(TOL["atol"] * scale))


def test_an_sae_reads_activations_of_any_precision_and_ablation_removes_its_feature():
    torch.manual_seed(0)
    sae = SAE(SAEConfig(32, 64, "relu", hook_name="blocks.0.hook_resid_post")).requires_grad_(False)
    with torch.no_grad():
        sae.b_enc.fill_(0.2)
    lm = _lm("qwen2")
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), capture(lm.model, [sae.cfg.hook_name]) as plain:
        lm.model(input_ids=ids)
    acts = plain[sae.cfg.hook_name]
    codes = sae.encode(acts)
    assert codes.dtype is torch.float32 and torch.isfinite(codes).all()
    torch.testing.assert_close(codes, sae.encode(acts.float()), rtol=0, atol=0)  # the SAE upcasts, nothing else
    feature = int(codes[0].sum(0).argmax())
    with torch.no_grad(), FeatureSteering(sae, [FeatureEdit(feature, "ablate", 0.0)], sae.cfg.hook_name).apply(lm), \
            capture(lm.model, [sae.cfg.hook_name]) as ablated:
        lm.model(input_ids=ids)
    after = sae.encode(ablated[sae.cfg.hook_name])[0, :, feature]
    before = codes[0, :, feature]
    assert float(after.abs().max()) <= float(TOL["atol"] * 10 * max(1.0, float(before.abs().max())))


@pytest.mark.parametrize("family", FAMILIES)
def test_ce_and_kl_in_the_run_precision_agree_with_float32(family):
    lm, reference = _lm(family), _lm(family, torch.float32)
    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        clean = next_token_logprobs_of(reference.model(input_ids=ids).logits)
    ce, kl, _ = ce_and_kl(lm, ids, clean)
    ce32, kl32, _ = ce_and_kl(reference, ids, clean)
    assert kl32 == pytest.approx(0.0, abs=1e-6)
    assert ce == pytest.approx(ce32, rel=TOL["rtol"]) and kl >= -1e-6 and kl < (1e-6 if DTYPE is torch.float32 else 0.05)


@pytest.mark.embedded  # loads the embedded model in a subprocess
def test_the_cli_follows_the_forced_precision_for_bulk_and_float32_for_measurements():
    info = json.loads(saescope("info", "--json").stdout)
    assert info["dtype"] == AUTO_DTYPE and info["precision"]["reason"] == "forced by $SAESCOPE_AUTO_DTYPE"
    measured = saescope("sae", "eval", "default", "--tokens", "256", "--json")
    assert measured.returncode == 0, measured.stderr
    result = json.loads(measured.stdout)
    assert result["dtype"] == "float32" and result["precision"]["purpose"] == "measure"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_decode_path_gives_the_plain_models_logits(family, dtype):
    """One-row products take the decode path (column-major copies in float32, ``torch.mv`` in bfloat16)
    inside the block only, with the plain model's logits to rounding; several rows keep the weights."""
    from saescope.model.fast_decode import decode_layout

    lm = _lm(family, dtype)
    one, rows = torch.tensor([[5]]), torch.tensor([[5, 9, 17]])
    with torch.no_grad():
        plain, plain_rows = lm.model(one).logits, lm.model(rows).logits
        with decode_layout(lm.model):
            patched = [m for m in lm.model.modules() if "forward" in vars(m)]
            fast, fast_rows = lm.model(one).logits, lm.model(rows).logits
    assert patched and not [m for m in lm.model.modules() if "forward" in vars(m)]
    if dtype is torch.bfloat16:  # every linear layer, the LM head included
        assert len(patched) == sum(isinstance(m, torch.nn.Linear) for m in lm.model.modules())
    tolerance = 1e-4 if dtype is torch.float32 else 2e-2
    torch.testing.assert_close(fast, plain, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(fast_rows, plain_rows, rtol=0, atol=0)
