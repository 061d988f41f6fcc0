"""Column-major decode copies give the plain model's numbers, are used only inside the block, follow edits."""

import torch

from saescope.model.fast_decode import decode_layout
from saescope.model.generation import generate


@torch.no_grad()
def _one_token_logits(lm) -> torch.Tensor:
    return lm.model(torch.tensor([[504]])).logits[0, -1]


@torch.no_grad()
def test_decode_layout_matches_the_plain_model_and_is_scoped(lm):
    plain = _one_token_logits(lm)
    gate = lm.model.model.layers[0].mlp.gate_proj
    with decode_layout(lm.model):
        assert "forward" in vars(gate) and "forward" in vars(lm.model.lm_head)
        fast = _one_token_logits(lm)
        batched = lm.model(torch.tensor([[504, 9, 17]])).logits[0, 0]  # several rows: the model's own weights
    assert "forward" not in vars(gate)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batched, plain, rtol=1e-4, atol=1e-4)
    assert generate(lm, ["The capital of France is"], max_new_tokens=8, temperature=0)[0][0]


@torch.no_grad()
def test_decode_layout_follows_an_in_place_weight_edit(lm):
    head = lm.model.lm_head.weight
    with decode_layout(lm.model):
        _one_token_logits(lm)  # copies made
    head[504].add_(1.0)
    try:
        edited = _one_token_logits(lm)
        with decode_layout(lm.model):
            fast = _one_token_logits(lm)
        torch.testing.assert_close(fast, edited, rtol=1e-4, atol=1e-4)
    finally:
        head[504].sub_(1.0)
