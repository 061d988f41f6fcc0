"""Prefix replay: the blocks below an intervention are skipped on inputs seen before, with identical outputs."""

from types import SimpleNamespace

import pytest
import torch

from helpers import tiny_model
from saescope.model.hooks import Together
from saescope.model.prefix_replay import PrefixReplay, first_touched_layer
from saescope.steering import VectorSteering


def _steer(hook: str, d: int, coeff: float = 3.0) -> VectorSteering:
    return VectorSteering(hook, torch.randn(d, generator=torch.Generator().manual_seed(1)), coeff)


def test_first_touched_layer_reads_hooks_and_weights(lm):
    d = lm.d_model
    assert first_touched_layer(lm, _steer("blocks.12.hook_resid_post", d)) == 12
    assert first_touched_layer(lm, _steer("blocks.7.hook_resid_pre", d)) == 7
    assert first_touched_layer(lm, _steer("blocks.9.hook_mlp_out", d)) == 9
    both = Together([_steer("blocks.20.hook_resid_post", d), _steer("blocks.4.hook_attn_out", d)])
    assert first_touched_layer(lm, both) == 4
    assert first_touched_layer(lm, _steer("model.embed_tokens", d)) == 0      # before the blocks: no replay
    assert first_touched_layer(lm, _steer("model.norm", d)) == 30             # after them: every block skipped

    class EditsLayer5Weight:
        def apply(self, lm_):
            from contextlib import contextmanager

            @contextmanager
            def edit():
                weight = lm_.model.model.layers[5].mlp.down_proj.weight
                with torch.no_grad():
                    weight.mul_(1.0)   # an in-place write, as a WeightEdit does
                yield
            return edit()

    assert first_touched_layer(lm, EditsLayer5Weight()) == 5


def test_replayed_passes_equal_full_ones_and_skip_the_prefix(lm):
    steer = _steer("blocks.12.hook_resid_post", lm.d_model)
    ids = lm.tokenize(["The nurse said that", "A pilot walked in and"])
    replay = PrefixReplay(lm, first_touched_layer(lm, steer))
    assert replay.useful
    with torch.inference_mode():
        with steer.apply(lm):
            full = lm.model(**ids).logits
        with replay.active():
            plain = lm.model(**ids).logits          # kept
            with steer.apply(lm):
                replayed = lm.model(**ids).logits   # replayed
                other = lm.model(input_ids=ids["input_ids"][:, :3]).logits   # unseen: runs in full
    assert replay.hits == 1 and len(replay.kept) == 2
    assert replay.kept[next(iter(replay.kept))].shape == (2, ids["input_ids"].shape[1], lm.d_model)
    torch.testing.assert_close(replayed, full)
    assert not torch.allclose(plain, full)
    with torch.inference_mode(), steer.apply(lm):
        torch.testing.assert_close(other, lm.model(input_ids=ids["input_ids"][:, :3]).logits)
    assert len(lm.model.model.layers) == 30   # the block list is restored


def test_kept_inputs_round_trip_through_a_file(lm, tmp_path):
    ids = lm.tokenize(["She said hello."])["input_ids"]
    first = PrefixReplay(lm, 10)
    with torch.inference_mode(), first.active():
        expected = lm.model(input_ids=ids).logits
    first.save(tmp_path / "prefix.safetensors")
    second, wrong_layer = PrefixReplay(lm, 10), PrefixReplay(lm, 11)
    second.load(tmp_path / "prefix.safetensors")
    wrong_layer.load(tmp_path / "prefix.safetensors")
    assert len(second.kept) == 1 and not wrong_layer.kept
    with torch.inference_mode(), second.active():
        torch.testing.assert_close(lm.model(input_ids=ids).logits, expected)
    assert second.hits == 1
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    second.load(tmp_path / "bad.safetensors")   # unreadable: adds nothing, no error


def test_passes_with_a_kv_cache_are_neither_kept_nor_replayed(lm):
    replay = PrefixReplay(lm, 12)
    ids = lm.tokenize(["Once upon a time"])["input_ids"]
    with torch.inference_mode(), replay.active():
        lm.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert not replay.kept and replay.hits == 0


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "gemma2", "qwen2", "mistral"])
def test_replay_is_exact_or_off_on_every_family(family):
    model = tiny_model(family)
    lm = SimpleNamespace(model=model, device=torch.device("cpu"))
    replay = PrefixReplay(lm, 1)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(input_ids=ids).logits
        with replay.active():
            model(input_ids=ids)
            again = model(input_ids=ids).logits
    torch.testing.assert_close(again, full, rtol=1e-4, atol=1e-4)
    assert replay.useful and replay.hits == 1, f"{family}: replay was turned off"
