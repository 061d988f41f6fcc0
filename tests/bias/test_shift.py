"""SHIFT on the embedded model: the shipped biographies are the generator's output and confounded as
documented; the probe readout is exact; a small end-to-end run gives every condition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saescope.bias.shift.core import (
    GROUPS,
    ShiftConfig,
    fit_probe,
    gender_swapped,
    name_swaps,
    pooled,
    probe_as_readout,
    scores,
    without_gendered_tokens,
)
from saescope.bias.shift.data import NAMES, bios, read_bios, write_bios
from saescope.bias.shift.run import CONDITIONS, run_shift
from saescope.errors import SaescopeError
from saescope.resources import data_path
from saescope.sae.formats import load_sae

L12 = "blocks.12.hook_resid_post"


def test_shipped_biographies_are_the_generators_output_and_confounded(tmp_path):
    for written in write_bios(tmp_path):
        assert written.read_text() == data_path("bias", "shift", written.name).read_text()
    train, test = read_bios("train"), read_bios("test")
    assert all(r["profession"] == 1 - r["gender"] for r in train)  # professors are men, nurses women
    groups = {(r["profession"], r["gender"]) for r in test}
    assert len(groups) == 4 and len(test) == 400
    for gender in ("male", "female"):
        assert not set(NAMES["train"][gender]) & set(NAMES["test"][gender])
    assert bios("test", 2, False, seed=1) != bios("test", 2, False, seed=2)


def test_a_replica_uses_the_training_vocabulary_only_with_a_new_test_half(tmp_path):
    from saescope.bias.shift.data import replica_vocabulary, vocabulary, write_replica

    halves = replica_vocabulary(0), replica_vocabulary(1)
    for gender in ("male", "female"):  # the halves split the training names, none of the test names
        assert sorted(halves[0]["names"][gender] + halves[1]["names"][gender]) == sorted(NAMES["train"][gender])
        assert not set(halves[0]["names"][gender]) & set(halves[1]["names"][gender])
    assert not set(halves[0]["templates"]) & set(halves[1]["templates"]) and halves[1]["templates"]
    train, oracle, test = (read_bios(str(p)) for p in write_replica(tmp_path, seed=1))
    assert all(r["profession"] == 1 - r["gender"] for r in train) and len(train) == len(test) == 400
    assert len({(r["profession"], r["gender"]) for r in oracle}) == len({(r["profession"], r["gender"]) for r in test}) == 4
    names = lambda rows: {r["text"].replace(",", " ").split()[0] for r in rows if r["text"].split()[0][0].isupper()}
    real_test = {n for group in vocabulary("test")["names"].values() for n in group}
    test_names = {n for group in halves[1]["names"].values() for n in group}
    assert not names(test) & real_test and names(test) & test_names
    assert not any(d.split(" {")[0] in r["text"] for r in test for d in halves[0]["work"][1] + halves[0]["work"][0])
    flipped = read_bios(str(write_replica(tmp_path / "flip", seed=1, flip=True)[2]))
    assert not any(d.split(" {")[0] in r["text"] for r in flipped for d in halves[1]["work"][1] + halves[1]["work"][0])


def test_gendered_tokens_are_deleted():
    assert without_gendered_tokens("Mary said she loves her work. He agreed.") == \
        "Alex said they loves their work. They agreed."


def test_scores_known_answer():
    class Fixed:  # predicts the given labels whatever the input
        def __init__(self, labels):
            self.labels = np.array(labels)

        def predict(self, x):
            return self.labels

    # rows: professor-man, professor-woman, nurse-man, nurse-woman, twice each
    rows = [{"profession": p, "gender": g} for p, g in [(1, 0), (1, 1), (0, 0), (0, 1)] * 2]
    got = scores(Fixed([1, 0, 1, 0, 1, 1, 0, 0]), np.zeros((8, 1)), rows)
    assert got["professor_male_acc"] == 1.0 and got["professor_female_acc"] == 0.5
    assert got["nurse_male_acc"] == 0.5 and got["nurse_female_acc"] == 1.0
    assert got["profession_acc"] == 0.75 and got["worst_group_acc"] == 0.5
    assert got["gender_acc"] == 0.75  # 6 of 8 predictions match "professor = male"
    only_men = scores(Fixed([1, 0]), np.zeros((2, 1)), [{"profession": 1, "gender": 0}, {"profession": 0, "gender": 0}])
    assert np.isnan(only_men["professor_female_acc"]) and only_men["worst_group_acc"] == 1.0


def test_gender_swap_changes_names_and_pronouns_only(lm):
    swaps = name_swaps(lm.tokenizer)
    assert gender_swapped("Mary said she loves her work. Friends describe her as kind. He agreed.", swaps) == \
        f"{swaps['Mary']} said he loves his work. Friends describe him as kind. She agreed."
    for rows in (read_bios("train"), read_bios("test")):
        for row in rows:
            assert gender_swapped(gender_swapped(row["text"], swaps), swaps).count(" ") == row["text"].count(" ")
    male, female = NAMES["train"]["male"], NAMES["train"]["female"]
    assert all(swaps[name] in female for name in male) and all(swaps[name] in male for name in female)
    width = lambda name: len(lm.tokenizer.encode(" " + name, add_special_tokens=False))
    assert sum(width(swaps[name]) == width(name) for name in male + female) >= 0.8 * len(male + female)


def test_swap_scores_find_a_gender_feature_and_leave_others(lm):
    from saescope.bias.shift.selection import gender_candidates, swap_scores

    sae = load_sae("default")
    rows = read_bios("train")[:48]
    effects = swap_scores(lm, sae, L12, [4137, 2654, 3870, 1256], rows)
    assert abs(effects[0]) > 1 and abs(effects[1]) > 1  # fire on one gender's names and pronouns
    assert abs(effects[3]) < 0.3
    chosen = gender_candidates(lm, {L12: sae}, {L12: [4137, 1256]}, rows)
    assert chosen == {L12: [4137]}
    with pytest.raises(SaescopeError, match="selection"):
        ShiftConfig(selection="nonsense")


def test_probe_readout_reproduces_the_probe(lm):
    rows = read_bios("oracle_train")[:40]
    x = pooled(lm, [r["text"] for r in rows], "blocks.3.hook_resid_post")
    probe = fit_probe(x.numpy(), np.array([r["profession"] for r in rows]))
    readout = probe_as_readout(probe, "blocks.3.hook_resid_post")
    logits = x @ readout.weight + readout.bias
    assert np.allclose(logits.numpy(), probe.decision_function(x.numpy()), atol=1e-3)
    y = np.array([r["profession"] for r in rows])
    norms = [np.linalg.norm(fit_probe(x.numpy(), y, c=c)[1].coef_) for c in (1e-4, 1e-3, 1e-1)]
    assert norms[0] < norms[1] < norms[2]  # probe_c is the inverse L2 strength
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(SaescopeError, match="probe_c"):
            ShiftConfig(probe_c=bad)
    with pytest.raises(SaescopeError, match="readout_input"):
        ShiftConfig(readout_input="codes")


def test_probe_on_the_sae_reconstruction_reads_out_exactly(lm):
    """A probe trained on pooled SAE reconstructions, as a circuits metric on raw activations (what the
    attribution differentiates), gives the probe's own logits."""
    from saescope.activations.read import hook_activations
    from saescope.model.likelihood import document_start_id, encode_texts

    sae = load_sae("default")
    rows = read_bios("oracle_train")[:40]
    x = pooled(lm, [r["text"] for r in rows], L12, transform=sae).numpy()
    assert not np.allclose(x, pooled(lm, [r["text"] for r in rows[:3]], L12).numpy()[:1].repeat(40, 0))
    probe = fit_probe(x, np.array([r["profession"] for r in rows]))
    readout = probe_as_readout(probe, L12, sae)
    for row, expected in zip(rows[:4], probe.decision_function(x[:4])):
        ids = torch.tensor([encode_texts(lm, [row["text"]], prefix=[document_start_id(lm)])[0]])
        acts, keep = hook_activations(lm, L12, ids)
        assert keep[0, 1:].all()  # no sink after the start token, so both poolings see the same positions
        assert abs(float(readout(acts, None)[0]) - expected) < 1e-3


@pytest.mark.slow
def test_a_small_shift_run_gives_every_condition(lm):
    saes = {L12: load_sae("default")}
    result = run_shift(lm, saes, ShiftConfig(readout_layer=12, top=20, attribution_bios=16, seeds=2, limit=48,
                                             features=["12:3870"]), progress=False)
    summary = result.summary
    assert set(summary) == set(CONDITIONS)
    for row in summary.values():
        assert 0 <= row["profession_acc"] <= 1 and 0 <= row["worst_group_acc"] <= row["profession_acc"] + 1e-9
    for runs in result.runs.values():
        for run in runs:  # every seed: the worst group is the least of the four groups' accuracies
            groups = [run[f"{name}_acc"] for name in GROUPS.values() if not np.isnan(run[f"{name}_acc"])]
            assert run["worst_group_acc"] == min(groups) and min(groups) <= run["profession_acc"] <= max(groups)
    assert len(result.runs["random"]) == 2
    assert result.ablated == {L12: [3870]} and len(result.candidates[L12]) == 20
    assert summary["original"]["gender_acc"] > 0.5  # a probe trained on confounded data leans on gender


def test_bad_feature_specs(lm):
    with pytest.raises(SaescopeError, match="LAYER:ID"):
        run_shift(lm, {L12: load_sae("default")}, ShiftConfig(readout_layer=12, features=["7:1"], limit=8, seeds=1,
                                                               attribution_bios=4), progress=False)
    with pytest.raises(SaescopeError, match="needs an SAE at blocks.13"):
        run_shift(lm, {L12: load_sae("default")}, ShiftConfig(readout_layer=13, features=["12:1"], limit=8, seeds=1,
                                                               attribution_bios=4, readout_input="reconstruction"),
                  progress=False)
    assert torch.is_tensor(pooled(lm, ["Mary is kind."], L12))


@pytest.mark.slow  # ~25 s; run_shift is tested through the API (test_a_small_shift_run_gives_every_condition)
def test_shift_run_cli_writes_every_condition_with_group_accuracies(tmp_path):
    import json

    from helpers import saescope

    test = tmp_path / "test.jsonl"  # a user's own balanced biographies
    test.write_text("".join(json.dumps(r) + "\n" for r in read_bios("test")[:24]), encoding="utf-8")
    result = saescope("bias", "shift", "run", "--out", str(tmp_path / "shift"), "--readout-layer", "12", "--top", "20",
                      "--attribution-bios", "8", "--seeds", "1", "--limit", "24", "--features", "12:3870",
                      "--test", str(test), "--readout-input", "reconstruction")
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "condition" in line)
    assert header.split()[-4:] == ["prof-m", "prof-f", "nurse-m", "nurse-f"]
    report = json.loads((tmp_path / "shift" / "shift.json").read_text())
    assert set(report["summary"]) == set(CONDITIONS) and report["ablated"] == {L12: [3870]}
    for row in report["summary"].values():
        assert {f"{name}_acc" for name in GROUPS.values()} <= set(row)
    assert json.loads((tmp_path / "shift" / "intervention.json").read_text())  # the ablation, reusable with steer
    assert report["settings"]["readout_input"] == "reconstruction"
    assert report["settings"]["data"] == ["train", "oracle_train", str(test)]
    for bad, message in ((["--readout-input", "codes"], "readout_input"), (["--test", str(tmp_path / "none.jsonl")],
                                                                            "does not exist")):
        result = saescope("shift", "run", "--out", str(tmp_path / "bad"), "--limit", "8", *bad)
        assert result.returncode == 2 and result.stderr.strip().startswith("error:") and message in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "bad" / "shift.json").exists()
