"""Circuits on the embedded model: the splice leaves the forward pass unchanged, IG is complete, attribution
tracks exact patching, edges and circuits are well-formed, faithfulness has its known end points."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from saescope.circuits.ablation import CircuitAblator, faithfulness_curve
from saescope.circuits.attribution import attribute, logit_diff
from saescope.circuits.config import CircuitConfig
from saescope.circuits.data import Pair, read_pairs, tokenize_pairs
from saescope.circuits.find import find_circuit, pair_batches
from saescope.circuits.graph import METRIC, Circuit, Node, select_nodes
from saescope.circuits.nodes import IdentityDictionary, node_states
from saescope.circuits.patching import check_against_patching, exact_effects
from saescope.errors import SaescopeError
from saescope.model.likelihood import last_token_logits
from saescope.sae.formats import load_sae

L12 = "blocks.12.hook_resid_post"
L6 = "blocks.6.hook_resid_post"


@pytest.fixture(scope="module")
def saes():
    return {L6: IdentityDictionary(576, L6), L12: load_sae("default")}


@pytest.fixture(scope="module")
def batch(lm):
    batches, _ = pair_batches(lm, read_pairs("sva_simple_train", limit=12), 8)
    return batches[0]


def test_pairs_are_tokenized_with_a_start_token_and_equal_lengths(lm):
    batches, dropped = tokenize_pairs(lm, read_pairs("sva_simple_train", limit=40))
    assert sum(len(b) for b in batches) + len(dropped) == 40
    for b in batches:
        assert b.clean_ids.shape == b.patch_ids.shape
        assert (b.clean_ids[:, 0] == b.clean_ids[0, 0]).all()
        assert (b.clean_answer != b.patch_answer).all()


def test_splicing_the_dictionaries_leaves_the_forward_pass_unchanged(lm, saes, batch):
    ablator = CircuitAblator(lm, saes, [Pair("The friends", " have", "The friend", " has")])
    everything = {h: (torch.ones_like(m[0]), torch.ones_like(m[1])) for h, m in ablator.masks(None).items()}
    assert ablator.metric_with(everything) == pytest.approx(ablator.metric_with(None), abs=1e-3)


def test_integrated_gradients_are_complete_at_one_hook_point(lm, batch):
    """Σ IG effects over every node of one hook point = m(patch) - m(clean) (completeness axiom)."""
    one = {L12: load_sae("default")}
    batch = batch.select([0, 1, 2, 3])
    effects = attribute(lm, one, batch, method="ig", steps=12)
    total = effects.features[L12].sum((1, 2)) + effects.errors[L12].sum(1)  # [n]
    with torch.no_grad():
        clean = logit_diff(last_token_logits(lm, batch.clean_ids, torch.ones_like(batch.clean_ids)), batch)
        patch = logit_diff(last_token_logits(lm, batch.patch_ids, torch.ones_like(batch.patch_ids)), batch)
    assert torch.allclose(total, patch - clean, rtol=0.05, atol=0.05)


def test_attribution_tracks_exact_patching(lm, saes, batch):
    check = check_against_patching(lm, saes, batch.select([0]), top=30, steps=8)
    assert len(check.nodes) == 30
    assert check.pearson["ig"] > 0.9
    assert check.sign_agreement["ig"] >= 0.8


def test_exact_patching_is_the_same_batched_or_one_node_at_a_time(lm, saes, batch):
    effects = attribute(lm, saes, batch.select([0, 1]), method="atp")
    assert effects.features[L12].shape == (2, batch.clean_ids.shape[1], 4608)
    mean_f = {h: effects.features[h].sum(1).mean(0) for h in effects.features}
    mean_e = {h: effects.errors[h].sum(1, keepdim=True).mean(0) for h in effects.errors}
    nodes = [replace(n, position=None) for n in select_nodes([L6, L12], mean_f, mean_e, 0.0)[:5]]
    together = exact_effects(lm, saes, batch.select([0, 1]), nodes, nodes_per_pass=5)
    alone = exact_effects(lm, saes, batch.select([0, 1]), nodes, nodes_per_pass=1)
    assert torch.allclose(together, alone, atol=1e-3)


def test_circuit_nodes_edges_and_round_trip(lm, saes, tmp_path):
    pairs = read_pairs("sva_simple_train", limit=16)
    circuit = find_circuit(lm, saes, pairs, CircuitConfig(method="ig", steps=4, node_threshold=0.05,
                                                          edge_threshold=0.0, aggregation="sum"), progress=False)
    keys = {n.key for n in circuit.nodes}
    assert circuit.nodes and all(abs(n.effect) >= 0.05 for n in circuit.nodes)
    for edge in circuit.edges:
        source, target = edge.source.split("/")[0], edge.target.split("/")[0]
        assert edge.source in keys and (edge.target in keys or edge.target == METRIC)
        assert (source, target) in {(L6, L12), (L12, METRIC)}
    metric_edges = {e.source: e.effect for e in circuit.edges if e.target == METRIC}
    assert all(metric_edges[n.key] == pytest.approx(n.effect) for n in circuit.nodes_at(L12))
    assert any(e.target != METRIC for e in circuit.edges)
    circuit.save(tmp_path / "c")
    again = Circuit.load(tmp_path / "c")
    assert [n.key for n in again.nodes] == [n.key for n in circuit.nodes]
    assert torch.equal(again.feature_effects[L12], circuit.feature_effects[L12])
    smaller = again.prune(node_threshold=0.5)
    assert {n.key for n in smaller.nodes} <= keys and len(smaller.nodes) <= len(circuit.nodes)
    assert json.loads((tmp_path / "c" / "circuit.json").read_text())["format"] == "saescope-circuit/1"


def test_targets_sharing_a_backward_pass_get_their_own_edges(lm, saes, monkeypatch):
    from saescope.circuits import edges

    batches, _ = pair_batches(lm, read_pairs("sva_simple_train", limit=24), 24)
    effects = attribute(lm, saes, batches[0], method="atp")
    sparse = {L6: IdentityDictionary(576, L6), L12: saes[L12]}
    active = (effects.clean[L12].f != 0).any(1).float().mean(0)  # share of pairs where each feature is active
    rare = torch.nonzero((active > 0) & (active < 0.4)).flatten()[:12].tolist()
    sources = [Node(L6, i) for i in range(0, 576, 97)] + [Node(L6, -1)]
    targets = [Node(L12, i) for i in rare] + [Node(L12, -1)]
    grouped = edges.edge_sums(lm, sparse, L6, L12, batches[0], effects, sources, targets)
    d_f = effects.clean[L12].f
    groups = edges._disjoint_groups(list(range(len(targets))), [edges._active_rows(t, d_f) for t in targets])
    assert len(groups) < len(targets)  # some targets did share a pass
    monkeypatch.setattr(edges, "_disjoint_groups", lambda live, rows: [[j] for j in live])
    alone = edges.edge_sums(lm, sparse, L6, L12, batches[0], effects, sources, targets)
    assert grouped.keys() == alone.keys()
    for key, value in alone.items():
        assert grouped[key] == pytest.approx(value, rel=1e-4, abs=1e-6)


def test_merged_batches_give_the_same_edges(lm, saes):
    from saescope.circuits.edges import edge_sums, merge_runs

    batches, _ = pair_batches(lm, read_pairs("sva_simple_train", limit=12), 4)
    runs = [(b, attribute(lm, saes, b, method="atp")) for b in batches]
    merged = merge_runs(runs)
    assert len(runs) == 3 and len(merged) == 1 and len(merged[0][0]) == sum(len(b) for b in batches)
    assert len(merge_runs(runs, max_tokens=2 * runs[0][0].clean_ids.numel())) == 2  # the token budget splits
    top = lambda hook, k: runs[0][1].features[hook].abs().sum((0, 1)).topk(k).indices.tolist()
    sources = [Node(L6, i) for i in top(L6, 5)] + [Node(L6, -1)]
    targets = [Node(L12, i) for i in top(L12, 4)] + [Node(L12, -1)]
    separate: dict = {}
    for b, e in runs:
        for key, value in edge_sums(lm, saes, L6, L12, b, e, sources, targets).items():
            separate[key] = separate.get(key, 0.0) + value
    together = edge_sums(lm, saes, L6, L12, *merged[0], sources, targets)
    assert together.keys() == separate.keys() and any(abs(v) > 0 for v in together.values())
    for key, value in together.items():
        assert value == pytest.approx(separate[key], rel=1e-3, abs=1e-5)


def test_faithfulness_of_the_whole_model_is_one_and_of_nothing_is_zero(lm):
    basis = {L12: IdentityDictionary(576, L12)}
    pairs = read_pairs("sva_simple_train", limit=8)
    circuit = find_circuit(lm, basis, pairs, CircuitConfig(method="atp", aggregation="sum", node_threshold=0.0,
                                                           max_nodes=10_000), progress=False, with_edges=False)
    assert len(circuit.nodes) == 576 + 1
    points, reference = faithfulness_curve(lm, basis, circuit, pairs, top_ns=[len(circuit.nodes), 0])
    assert points[0].faithfulness == pytest.approx(1.0, abs=1e-3)
    assert points[0].completeness == pytest.approx(0.0, abs=1e-3)
    assert points[1].faithfulness == pytest.approx(0.0, abs=1e-3)
    assert reference["metric_model"] < reference["metric_empty"]  # the model prefers the clean answer


def test_node_states_split_exactly(lm, saes, batch):
    states = node_states(lm, saes, batch.clean_ids)
    assert states[L12].f.shape == (len(batch), batch.clean_ids.shape[1], 4608)
    assert states[L12].sink[:, 0].all() and not states[L12].sink[:, 1:].any()


@pytest.mark.parametrize("config, message", [
    (dict(node_threshold=-1), "node_threshold"), (dict(method="exact"), "unknown method"),
    (dict(aggregation="mean"), "unknown aggregation"), (dict(steps=0), "steps"),
])
def test_bad_settings(config, message):
    with pytest.raises(SaescopeError, match=message):
        CircuitConfig(**config)


def test_bad_pairs(lm, saes, tmp_path):
    with pytest.raises(SaescopeError, match="single tokens"):
        tokenize_pairs(lm, [Pair("The friends", " have been", "The friend", " has")])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SaescopeError, match="no pairs"):
        read_pairs(tmp_path / "empty.jsonl")
    mixed = [Pair("The friends", " have", "The friend", " has"), Pair("The old friends", " have", "The old friend", " has")]
    with pytest.raises(SaescopeError, match="aggregation none needs prompts of one length"):
        find_circuit(lm, saes, mixed, CircuitConfig(aggregation="none"), progress=False)
    with pytest.raises(SaescopeError, match="width"):
        find_circuit(lm, {L6: IdentityDictionary(32, L6)}, mixed, CircuitConfig(), progress=False)
