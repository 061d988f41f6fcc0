"""``debias --method circuit``: the pronoun metric, stereotype nodes and their multi-layer ablation candidates."""

from __future__ import annotations

import torch

from saescope.bias.data import GenderedPrompt, SelectionPrompts
from saescope.bias.debias.circuit import PronounMetric, circuit_candidates, stereotype_nodes
from saescope.circuits.nodes import IdentityDictionary
from saescope.model.hooks import applied
from saescope.model.likelihood import last_token_logits
from saescope.sae.formats import load_sae
from saescope.steering import Interventions

L12 = "blocks.12.hook_resid_post"


def _small_selection() -> SelectionPrompts:
    subjects_f, subjects_m = ["My niece", "My aunt"], ["My nephew", "My uncle"]
    definitional = [GenderedPrompt(f"{s} explained that", s in subjects_f) for s in subjects_f + subjects_m]
    return SelectionPrompts(["midwife", "nanny"], ["pilot", "welder"], ["The {occupation} explained that"],
                            definitional, subjects_f, subjects_m)


def test_pronoun_metric_is_the_log_odds_of_she(lm):
    ids = lm.tokenizer(["The nurse said that", "The pilot said that"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        values = PronounMetric(lm)(last_token_logits(lm, ids, torch.ones_like(ids)), None)
    assert values[0] > values[1]  # the model's stereotype: nurse -> she, pilot -> he


def test_stereotype_nodes_and_candidates(lm):
    saes = {L12: load_sae("default")}
    selection = _small_selection()
    nodes = stereotype_nodes(lm, saes, selection)
    assert nodes and all(h == L12 for h, _, _ in nodes)
    assert abs(nodes[0][2]) >= abs(nodes[-1][2])
    candidates = circuit_candidates(lm, saes, selection, counts=[2, 4])
    assert [len(features) for _, features, _ in candidates] == [2, 4]
    label, features, intervention = candidates[0]
    assert isinstance(intervention, Interventions) and features == [n[1] for n in nodes[:2]]
    ids = lm.tokenizer(["The midwife explained that"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = last_token_logits(lm, ids, torch.ones_like(ids))
        with applied(candidates[1][2], lm):
            ablated = last_token_logits(lm, ids, torch.ones_like(ids))
    assert not torch.allclose(plain, ablated)


def test_identity_basis_has_no_error_nodes(lm):
    basis = IdentityDictionary(576, L12)
    x = torch.randn(2, 3, 576)
    assert torch.equal(basis.decode(basis.encode(x)), x)
