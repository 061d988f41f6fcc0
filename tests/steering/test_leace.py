"""LEACE through the real ``concept-erasure`` package: the oblique ``SubspaceErasure`` it becomes applies
exactly the library's eraser, leaves no linear trace of the concept, and saves and loads."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_model
from saescope.bias.debias.leace import leace_eraser
from saescope.errors import SaescopeError
from saescope.model.hooks import capture
from saescope.model.loading import LoadedModel
from saescope.steering import SubspaceErasure, load_intervention

HOOK = "blocks.0.hook_resid_post"


def _data(n: int = 200, d: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g) + 2.0 * z[:, None] * torch.randn(d, generator=g)  # the concept shifts x
    return x, z


def test_the_erasure_is_the_librarys_and_no_linear_trace_is_left(tmp_path):
    x, z = _data()
    eraser = leace_eraser(x, z)
    erasure = SubspaceErasure(HOOK, eraser.proj_left.T, eraser.bias, read=eraser.proj_right)
    lm = LoadedModel(tiny_model("gpt2"), tokenizer=None, name="gpt2-tiny")
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture(lm.model, [HOOK]) as plain:
        lm.model(input_ids=ids)
    with torch.no_grad(), erasure.apply(lm), capture(lm.model, [HOOK]) as erased:
        lm.model(input_ids=ids)
    expected = eraser(plain[HOOK].double()).float()
    torch.testing.assert_close(erased[HOOK], expected, rtol=1e-4, atol=1e-4)
    cleaned = eraser(x.double())
    gap = cleaned[z == 1].mean(0) - cleaned[z == 0].mean(0)  # LEACE: equal class means, so no linear probe
    assert float(gap.abs().max()) < 1e-6 and float((x[z == 1].mean(0) - x[z == 0].mean(0)).abs().max()) > 1
    erasure.save(tmp_path / "leace.json")
    again = load_intervention(tmp_path / "leace.json")
    assert torch.equal(again.read, erasure.read) and torch.equal(again.basis, erasure.basis)


def test_one_class_and_mismatched_shapes_are_refused():
    x, z = _data()
    with pytest.raises(SaescopeError, match="both classes"):
        leace_eraser(x, torch.zeros_like(z))
    with pytest.raises(SaescopeError, match="differ in shape"):
        SubspaceErasure(HOOK, torch.randn(1, 32), read=torch.randn(2, 32))
