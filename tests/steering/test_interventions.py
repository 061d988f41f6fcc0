"""Interventions: exactness when neutral, error term kept, action on every KV-cached decode step."""

import inspect

import pytest
import torch

from saescope.errors import SaescopeError
from saescope.model.generation import generate
from saescope.model.hooks import capture
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import save_sae
from saescope.steering import (
    AlignmentSteering,
    FeatureEdit,
    FeatureSteering,
    Interventions,
    VectorSteering,
    load_intervention,
)

HOOK = "blocks.6.hook_resid_post"
PROMPT = "The doctor told the nurse that the results were"


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    torch.manual_seed(0)
    sae = SAE(SAEConfig(576, 256, "topk", k=8, hook_name=HOOK)).requires_grad_(False)
    folder = tmp_path_factory.mktemp("sae") / "sae"
    save_sae(sae, folder)
    from saescope.sae.formats import load_sae

    return load_sae(folder)


def _logits(lm, intervention=None):
    ids = lm.tokenize([PROMPT])["input_ids"]
    if intervention is None:
        return lm.model(ids).logits
    with intervention.apply(lm):
        return lm.model(ids).logits


def test_neutral_interventions_give_exactly_the_unsteered_logits(lm, sae):
    clean = _logits(lm)
    feats = sae.encode(_resid(lm))
    silent = int((feats[0].sum(0) == 0).nonzero()[0])  # a feature inactive on every token
    for neutral in (FeatureSteering(sae, [FeatureEdit(3, "add", 0.0)]),
                    FeatureSteering(sae, [FeatureEdit(5, "scale", 1.0)]),
                    FeatureSteering(sae, [FeatureEdit(silent, "clamp", 0.0)]),
                    VectorSteering(HOOK, torch.randn(576), 0.0)):
        assert torch.equal(_logits(lm, neutral), clean)
    assert not torch.equal(_logits(lm, FeatureSteering(sae, [FeatureEdit(3, "add", 20.0)])), clean)


def _resid(lm):
    with capture(lm.model, [HOOK]) as acts:
        lm.model(lm.tokenize([PROMPT])["input_ids"])
    return acts[HOOK]


@pytest.mark.parametrize("op, value", [("clamp", 7.5), ("ablate", 0.0), ("scale", 3.0)])
def test_clamp_ablate_scale_change_only_the_targeted_features(lm, sae, op, value):
    x = _resid(lm)
    feats = sae.encode(x)
    targets = feats[0].sum(0).topk(2).indices.tolist()  # features that are active here
    steer = FeatureSteering(sae, [FeatureEdit(f, op, value) for f in targets])
    with steer.apply(lm):
        patched = _resid(lm)
    old = feats[..., targets]
    new = {"clamp": torch.full_like(old, value), "ablate": torch.zeros_like(old), "scale": old * value}[op]
    expected = x + (new - old) @ sae.W_dec[targets]
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-4)
    # everything the SAE does not explain (its error term) is untouched
    residual_change = patched - x
    in_span = (new - old) @ sae.W_dec[targets]
    torch.testing.assert_close(residual_change, in_span, rtol=1e-5, atol=1e-4)


def test_steering_acts_on_every_kv_cached_decode_step(lm, sae):
    steer = FeatureSteering(sae, [FeatureEdit(7, "add", 30.0)])
    ids = lm.tokenize([PROMPT])["input_ids"]
    continuation = torch.tensor([[lm.tokenizer.encode(" very")[0]] * 6])

    # transformers 5 renamed the KV cache argument and output field past_key_values -> cache
    new_name = "cache" in inspect.signature(lm.model.forward).parameters
    cache_of = lambda out: out.cache if new_name else out.past_key_values

    def step_logits(intervention):
        outs = []
        context = intervention.apply(lm) if intervention else torch.no_grad()
        with context:
            past = cache_of(lm.model(ids, use_cache=True))
            for t in range(continuation.shape[1]):
                out = lm.model(continuation[:, t:t + 1], use_cache=True, **{"cache" if new_name else "past_key_values": past})
                past = cache_of(out)
                outs.append(out.logits[0, -1])
        return outs

    plain, steered = step_logits(None), step_logits(steer)
    assert all((p - s).abs().max() > 1e-3 for p, s in zip(plain, steered))
    seqs = []
    handle = lm.model.model.layers[6].register_forward_hook(lambda m, a, o: seqs.append(o[0].shape[-2]
                                                            if isinstance(o, tuple) else o.shape[-2]))
    try:
        with steer.apply(lm):
            lm.model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
    finally:
        handle.remove()
    assert seqs[0] == ids.shape[1] and seqs[1:] == [1, 1, 1, 1]


def test_prompt_positions_only_leave_decode_steps_alone(lm, sae):
    ids = lm.tokenize([PROMPT])["input_ids"]
    steer = VectorSteering(HOOK, torch.randn(576), 5.0, positions=[1, 2])
    with steer.apply(lm):
        patched = _resid(lm)
    delta = (patched - _resid(lm))[0].norm(dim=-1)
    assert (delta[[1, 2]] > 0).all() and (delta[[0] + list(range(3, ids.shape[1]))] == 0).all()


def test_generation_is_paired_by_seed(lm, sae):
    plain = generate(lm, [PROMPT], None, max_new_tokens=8, n=2, seed=3)
    again = generate(lm, [PROMPT], FeatureSteering(sae, [FeatureEdit(1, "add", 0.0)]), max_new_tokens=8, n=2, seed=3)
    assert plain == again and plain[0][0] != plain[0][1]


def test_interventions_round_trip_through_json(lm, sae, tmp_path):
    scores = torch.rand(256)
    combo = Interventions([FeatureSteering(sae, [FeatureEdit(3, "add", 4.0), FeatureEdit(9, "clamp", 2.0)]),
                           VectorSteering("blocks.3.hook_resid_pre", torch.randn(576), 2.0),
                           AlignmentSteering(sae, scores, "swap")])
    combo.save(tmp_path / "iv.json")
    loaded = load_intervention(tmp_path / "iv.json")
    torch.testing.assert_close(_logits(lm, loaded), _logits(lm, combo))
    assert not torch.equal(_logits(lm, combo), _logits(lm))


def test_alignment_methods_with_uniform_scores(lm, sae):
    x = _resid(lm)
    with AlignmentSteering(sae, torch.ones(256), "swap").apply(lm):
        same = _resid(lm)
    torch.testing.assert_close(same, x, rtol=1e-4, atol=1e-3)  # scores of 1: swap keeps the SAE's own choice
    with AlignmentSteering(sae, torch.ones(256), "weight", keep_error=False).apply(lm):
        recon = _resid(lm)
    torch.testing.assert_close(recon, sae(x), rtol=1e-4, atol=1e-3)


def test_bad_intervention_input(lm, sae, tmp_path):
    with pytest.raises(SaescopeError, match="out of range"):
        FeatureSteering(sae, [FeatureEdit(256, "add", 1.0)])
    with pytest.raises(SaescopeError, match="finite"):
        FeatureEdit(1, "add", float("nan"))
    with pytest.raises(SaescopeError, match="finite"):
        VectorSteering(HOOK, torch.ones(576), float("inf"))
    with pytest.raises(SaescopeError, match="another SAE"):
        AlignmentSteering(sae, torch.ones(100), "swap")
    with pytest.raises(SaescopeError, match="another model"):
        with VectorSteering(HOOK, torch.ones(64), 1.0).apply(lm):
            pass
    with pytest.raises(SaescopeError, match="empty prompt"):
        generate(lm, ["  "])
    with pytest.raises(SaescopeError, match="max.new.tokens"):
        generate(lm, ["hi"], max_new_tokens=0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SaescopeError, match="not valid JSON"):
        load_intervention(tmp_path / "bad.json")
