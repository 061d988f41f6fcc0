"""Gender-bias benchmarks: data readers, likelihood scoring, metrics, erasure, the evaluation and the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import saescope
from saescope.bias.benchmarks import agreement_accuracy, occupation_bias, twin_preference
from saescope.bias.data import (
    BiasData,
    Occupation,
    SelectionPrompts,
    TwinPair,
    read_agreement,
    read_crows,
    read_occupations,
    read_winobias,
)
from saescope.bias.evaluation import evaluate
from saescope.bias.scoring import p_she, pronoun_ids
from saescope.errors import SaescopeError
from saescope.model.likelihood import document_start_id, sentence_logprobs
from saescope.steering import FeatureEdit, FeatureSteering, SubspaceErasure, VectorSteering, load_intervention


def small_data(n: int = 6) -> BiasData:
    full = BiasData.load()
    winobias = [p for p in full.winobias if p.group == "type1"][:n] + [p for p in full.winobias if p.group == "type2"][:n]
    return BiasData(full.occupations[:8], winobias, full.crows[:n], full.agreement[:2 * n], full.definitional[::8],
                    full.templates[:2])


def test_shipped_data_matches_the_sources(shared_data):
    data = BiasData.load()
    assert len(data.occupations) == 60 and len(data.templates) >= 5
    assert {p.group: 0 for p in data.winobias}.keys() == {"type1", "type2"} and len(data.winobias) == 2 * 396
    assert len(data.crows) == 127
    assert len(data.agreement) == 2 * 3 * 480
    assert read_occupations(shared_data / "occupations" / "occupations-stats.tsv") == data.occupations
    assert read_winobias(shared_data / "winobias") == data.winobias
    first = data.winobias[0]
    assert first.stereo == "The developer argued with the designer because he did not like the design."
    assert first.anti == first.stereo.replace(" he ", " she ")
    selection = SelectionPrompts.load()
    evaluation_words = {o.name for o in data.occupations}
    assert not evaluation_words & set(selection.female_occupations + selection.male_occupations)
    assert not {p.prompt for p in selection.definitional} & {p.prompt for p in data.definitional}


def test_readers_name_file_line_and_column(tmp_path):
    bad = tmp_path / "occ.tsv"
    bad.write_text("occupation\tbls_pct_female\nnurse\t90\nbaker\tmany\n")
    with pytest.raises(SaescopeError, match=r"occ.tsv, line 3: .*'bls_pct_female'"):
        read_occupations(bad)
    bad.write_text("job\tpct\nnurse\t90\n")
    with pytest.raises(SaescopeError, match="line 1: .*'occupation' and 'bls_pct_female'"):
        read_occupations(bad)
    crows = tmp_path / "crows.csv"
    crows.write_text("sent_more,sent_less,stereo_antistereo,bias_type\na,b,stereo,race-color\n")
    with pytest.raises(SaescopeError, match="no rows with bias_type == gender"):
        read_crows(crows)
    crows.write_text("sentence,bias_type\na,gender\n")
    with pytest.raises(SaescopeError, match="line 1: expected CSV columns sent_more"):
        read_crows(crows)
    sva = tmp_path / "sva.jsonl"
    sva.write_text('{"clean_prefix": "The dog", "patch_prefix": "The dogs", "clean_answer": " is", '
                   '"patch_answer": " are"}\n{"clean_prefix": "x"}\n')
    with pytest.raises(SaescopeError, match="sva.jsonl, line 2: expected a JSON object with clean_prefix"):
        read_agreement(sva)
    wino = tmp_path / "wino"
    wino.mkdir()
    for kind in ("type1", "type2"):
        (wino / f"pro_stereotyped_{kind}.dev.txt").write_text("1 [The nurse] said [she] was tired.\n")
        (wino / f"anti_stereotyped_{kind}.dev.txt").write_text("1 [The nurse] said [he] was tired.\n2 x\n")
    with pytest.raises(SaescopeError, match="line 2: expected '<number> <sentence"):
        read_winobias(wino)


def test_p_she_equals_the_softmax_of_the_model(lm):
    she, he = pronoun_ids(lm)
    assert lm.tokenizer.decode(she[:1]) == " she" and lm.tokenizer.decode(he[:1]) == " he"
    prompts = ["The nurse said that", "After a long day, the engineer said that"]
    ids = lm.tokenizer(prompts[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = lm.model(ids).logits[0, -1].softmax(-1)
    expected = float(probs[she].sum() / (probs[she].sum() + probs[he].sum()))
    got = p_she(lm, prompts)  # batched with padding: the shorter prompt is padded
    assert got[1].item() == pytest.approx(expected, rel=1e-4)
    assert got[0] > got[1]  # nurse above engineer: the stereotype this project measures


def test_sentence_logprob_scores_every_token(lm):
    text = "She went home."
    ids = [document_start_id(lm)] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = lm.model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    expected = float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    got = sentence_logprobs(lm, [text, "He went home after a long and tiring day at work."])
    assert got[0].item() == pytest.approx(expected, rel=1e-4)
    assert got[0] != sentence_logprobs(lm, ["He went home."])[0]  # the first word is scored


def test_metrics_are_the_definitions(lm):
    occupations = [Occupation("nurse", 90.0), Occupation("engineer", 10.0), Occupation("teacher", 70.0),
                   Occupation("carpenter", 2.0)]
    templates = ("The {occupation} said that", "The {occupation} was late because")
    scores = occupation_bias(lm, occupations, templates)
    probs = p_she(lm, [t.format(occupation=o.name) for o in occupations for t in templates]).view(4, 2).double()
    per_occ = probs.mean(1).numpy()
    assert scores.pearson_r == pytest.approx(stats.pearsonr(per_occ, [90, 10, 70, 2]).statistic, rel=1e-6)
    assert scores.mean_abs_dev == pytest.approx(float((probs - 0.5).abs().mean()), rel=1e-6)
    assert list(scores.p_she) == ["nurse", "engineer", "teacher", "carpenter"]
    pairs = [TwinPair("The nurse said she was tired.", "The nurse said he was tired.", "a"),
             TwinPair("The engineer said he was tired.", "The engineer said she was tired.", "a"),
             TwinPair("The engineer said she was tired.", "The engineer said he was tired.", "b")]
    twins = twin_preference(lm, pairs)
    swapped = twin_preference(lm, [TwinPair(p.anti, p.stereo, p.group) for p in pairs])
    assert twins.preference["all"] == pytest.approx(1 - swapped.preference["all"])
    assert twins.mean_gap["a"] == pytest.approx(-swapped.mean_gap["a"], rel=1e-5)
    assert twins.preference["a"] == 1.0 and twins.preference["b"] == 0.0  # pro = he for engineer
    assert agreement_accuracy(lm, read_agreement(BiasData.load().sources["agreement"])[:40]) >= 0.9


def test_subspace_erasure_removes_exactly_the_subspace(lm):
    torch.manual_seed(0)
    basis, mean = torch.randn(2, lm.d_model), torch.randn(lm.d_model)
    erase = SubspaceErasure("blocks.3.hook_resid_post", basis, mean)
    (fn,) = [fn for _, fn in erase.hook_fns(lm)]
    acts = torch.randn(2, 5, lm.d_model)
    out = fn(acts)
    q = erase.basis
    assert torch.allclose(out @ q.T, (mean @ q.T).expand(2, 5, 2), atol=1e-4)  # coordinates set to the anchor
    rest = torch.eye(lm.d_model) - q.T @ q
    assert torch.allclose(out @ rest, acts @ rest, atol=1e-4)  # nothing else moves
    (half,) = [fn for _, fn in erase.scaled(0.0).hook_fns(lm)]
    assert torch.equal(half(acts), acts)


def test_cap_clamps_from_above_and_keeps_the_error_term(lm):
    from saescope.sae.formats import load_sae

    sae = load_sae("default")
    ids = lm.tokenizer("The nurse said that she was tired", return_tensors="pt")["input_ids"]
    from saescope.model.hooks import capture

    with capture(lm.model, [sae.cfg.hook_name]) as got:
        lm.model(ids)
    acts = got[sae.cfg.hook_name].float()
    feats = sae.encode(acts)
    feature = int(feats[0, 1:].amax(0).argmax())
    level = float(feats[0, 1:, feature].max()) / 2
    steer = FeatureSteering(sae, [FeatureEdit(feature, "cap", level)])
    (fn,) = [fn for _, fn in steer.hook_fns(lm)]
    out = fn(acts)
    expected = feats[..., feature].clamp(max=level)
    delta = (expected - feats[..., feature])[..., None] * sae.W_dec[feature]
    assert torch.allclose(out, acts + delta, atol=1e-4)


def test_evaluate_with_a_null_intervention_changes_nothing(lm):
    data = small_data()
    null = VectorSteering("blocks.12.hook_resid_post", torch.zeros(lm.d_model))
    result = evaluate(lm, null, data, ce_tokens=256, cache=False)  # both sides measured here, same threads
    assert result.intervened is not None and result.kl_div == pytest.approx(0.0, abs=1e-7)
    changes = result.changes
    assert changes["mean_abs_dev_reduction"] == pytest.approx(0.0, abs=1e-6)
    assert changes["ce_loss_increase"] == pytest.approx(0.0, abs=1e-6)
    assert changes["definitional_ratio"] == pytest.approx(1.0)
    assert result.base.winobias.n == {"type1": 6, "type2": 6, "all": 12}
    steer = VectorSteering("blocks.12.hook_resid_post", torch.ones(lm.d_model) / math.sqrt(lm.d_model), coeff=40.0)
    moved = evaluate(lm, steer, data, ce_tokens=256, base=result.base)
    assert moved.kl_div > 1e-3 and moved.intervened.occupations.mean_p_she != result.base.occupations.mean_p_she
    assert json.dumps(moved.to_dict(), default=float)


def test_bias_cli_errors(tmp_path, lm):
    bad = tmp_path / "occ.tsv"
    bad.write_text("occupation\tbls_pct_female\nnurse\tlots\n")
    result = saescope("bias", "eval", "--occupations", str(bad))
    assert result.returncode == 2 and "line 2" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    other = tmp_path / "other.json"
    VectorSteering("blocks.1.hook_resid_post", torch.zeros(lm.d_model)).save(other)
    data = json.loads(other.read_text())
    other.write_text(json.dumps({**data, "model": "gpt2"}))
    result = saescope("bias", "eval", "--intervention", str(other), "--ce-tokens", "128")
    assert result.returncode == 2 and "made for model 'gpt2'" in result.stderr
    result = saescope("debias", "--method", "bogus", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "unknown debias method" in result.stderr and not (tmp_path / "out").exists()


def _write_small_data(folder, shared_data) -> list[str]:
    data = small_data(4)
    (folder / "occ.tsv").write_text("occupation\tbls_pct_female\n" +
                                    "".join(f"{o.name}\t{o.pct_female}\n" for o in data.occupations))
    wino = folder / "wino"
    wino.mkdir()
    for kind in ("type1", "type2"):
        for side in ("pro", "anti"):
            lines = (shared_data / "winobias" / f"{side}_stereotyped_{kind}.dev.txt").read_text().splitlines()[:4]
            (wino / f"{side}_stereotyped_{kind}.dev.txt").write_text("\n".join(lines) + "\n")
    lines = (shared_data / "sva" / "simple_train.json").read_text().splitlines()[:40]
    (folder / "sva.jsonl").write_text("\n".join(lines) + "\n")
    return ["--occupations", str(folder / "occ.tsv"), "--winobias", str(wino), "--agreement", str(folder / "sva.jsonl"),
            "--ce-tokens", "256"]


@pytest.mark.slow
def test_debias_cli_end_to_end(tmp_path, shared_data):
    options = _write_small_data(tmp_path, shared_data)
    out = tmp_path / "debias"
    result = saescope("bias", "debias", "--method", "ablate", "--strengths", "4", "--out", str(out), "--json", *options)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["method"] == "ablate" and len(report["features"]) == 4
    assert set(report["targets_met"]) >= {"abs_pearson_r", "definitional_ratio", "ce_loss_increase"}
    html = (out / "report.html").read_text()
    assert "<svg" in html and 'id="metrics"' in html and "http" not in html.split("<svg")[0]
    for feature in report["features"]:
        assert f">{feature}<" in html.replace("\n", "")
    saved = load_intervention(out / "intervention.json")
    assert isinstance(saved, FeatureSteering) and [e.feature for e in saved.edits] == report["features"]
    record = json.loads((out / "debias.json").read_text())
    assert record["method"] == "ablate" and record["features"] == report["features"]
    again = saescope("bias", "eval", "--intervention", str(out / "intervention.json"), "--json", *options)
    assert again.returncode == 0, again.stderr
    repeat = json.loads(again.stdout)
    assert repeat["changes"]["abs_pearson_r"] == pytest.approx(report["changes"]["abs_pearson_r"], rel=1e-5)
    assert np.isfinite(repeat["kl_div"])


def test_gender_features_separate_stereotype_from_definitional(lm):
    from saescope.bias.gender_features import rank_gender_features
    from saescope.sae.formats import load_sae

    table = rank_gender_features(lm, load_sae("default"))
    assert len(table) == 4608 and set(table.kind) <= {"stereotype", "definitional", "both", "none"}
    stereotype = table[table.kind == "stereotype"]
    definitional = table[table.kind == "definitional"]
    assert len(stereotype) >= 3 and len(definitional) >= 3
    assert (stereotype.stereotype_q < 0.05).all()
    assert (stereotype.definitional_diff.abs() < stereotype.stereotype_diff.abs() / 2).all()
    assert table.stereotype_diff.abs().is_monotonic_decreasing
    # No selection prompt is read at the attention sink: one-token subjects ("Peter") once made the gate
    # features sink artefacts with definitional differences of -205 to -863; real codes here are tens.
    gate = table[table.gate]
    assert len(gate) >= 5 and (gate.definitional_diff.abs() < 50).all() and 2654 in set(gate.feature)


def test_gated_erasure_leaves_gate_tokens_alone_and_round_trips(lm, tmp_path):
    from saescope.model.hooks import capture
    from saescope.sae.formats import load_sae
    from saescope.steering import FeatureGate

    sae = load_sae("default")
    hook = sae.cfg.hook_name
    ids = lm.tokenizer("My mother said that the nurse was tired", return_tensors="pt")["input_ids"]
    with capture(lm.model, [hook]) as got:
        lm.model(ids)
    acts = got[hook].float()
    feats = sae.encode(acts)[0]
    on_mother = (feats[1] > 0).nonzero().flatten()
    gate_feature = int(on_mother[(feats[:, on_mother] > 0).sum(0).argmin()])  # fires on " mother", rarely elsewhere
    fires = feats[:, gate_feature] > 0
    assert fires.any() and not fires.all()
    direction = torch.randn(lm.d_model)
    erase = SubspaceErasure(hook, direction, torch.zeros(lm.d_model), gate=FeatureGate(sae, [gate_feature]))
    fns = erase.hook_fns(lm)
    assert [h for h, _ in fns] == [hook, hook]  # the gate runs first, on the same forward
    fns[0][1](acts)
    out = fns[1][1](acts)
    assert torch.equal(out[0, fires], acts[0, fires])
    unit = direction / direction.norm()
    assert torch.allclose(out[0, ~fires] @ unit, torch.zeros(int((~fires).sum())), atol=1e-3)
    erase.save(tmp_path / "gated.json")
    again = load_intervention(tmp_path / "gated.json")
    assert again.gate.features == [gate_feature] and torch.allclose(again.basis, erase.basis)
    late_gate = SubspaceErasure("blocks.3.hook_resid_post", direction, gate=FeatureGate(sae, [gate_feature]))
    with pytest.raises(SaescopeError, match="runs after the erasure"):
        late_gate.hook_fns(lm)


def test_readout_direction_is_the_gradient(lm):
    from saescope.bias.data import SelectionPrompts
    from saescope.bias.debias.erase import readout_direction
    from saescope.model.hooks import intervene

    selection = SelectionPrompts(["midwife"], ["pilot"], ["The {occupation} explained that"], [], [], [])
    hook = "blocks.14.hook_resid_post"
    direction = readout_direction(lm, hook, selection)
    assert direction.norm().item() == pytest.approx(1.0, rel=1e-5)
    she, he = pronoun_ids(lm)

    def log_odds(prompt: str, shift: float) -> float:
        ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
        position = len(lm.tokenizer("The midwife")["input_ids"]) - 1

        def move(acts):
            acts = acts.clone()
            acts[0, position] += shift * direction
            return acts

        with torch.no_grad(), intervene(lm.model, {hook: move}):
            logp = lm.model(ids).logits[0, -1].log_softmax(-1)
        return float(logp[she].logsumexp(0) - logp[he].logsumexp(0))

    prompt = "The midwife explained that"
    assert log_odds(prompt, 0.5) > log_odds(prompt, 0.0) > log_odds(prompt, -0.5)


@pytest.mark.slow  # ~50 s; the ranking is tested through the API in test_gender_features_*
def test_bias_features_cli():
    result = saescope("bias", "features", "--top", "5", "--kind", "stereotype", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 5 and all(r["kind"] == "stereotype" for r in rows)
    assert all(r["stereotype_q"] < 0.05 and r["promotes"] for r in rows)
    diffs = [abs(r["stereotype_diff"]) for r in rows]
    assert diffs == sorted(diffs, reverse=True)
    bad = saescope("bias", "features", "--kind", "nonsense")
    assert bad.returncode == 2 and "unknown --kind" in bad.stderr


def test_one_batched_backward_gives_the_readout_at_every_layer(lm):
    from saescope.bias.data import SelectionPrompts
    from saescope.bias.debias.erase import readout_direction, readout_directions

    selection = SelectionPrompts(["midwife", "nurse"], ["pilot"], ["The {occupation} explained that",
                                                                  "Yesterday the {occupation} said"], [], [], [])
    hooks = ["blocks.12.hook_resid_post", "blocks.14.hook_resid_post"]
    together = readout_directions(lm, hooks, selection, batch_size=4)
    for hook in hooks:
        alone = readout_direction(lm, hook, SelectionPrompts(["midwife", "nurse"], ["pilot"],
                                                             ["The {occupation} explained that",
                                                              "Yesterday the {occupation} said"], [], [], []))
        assert torch.allclose(together[hook], alone, atol=1e-4)
    assert float(together[hooks[0]] @ together[hooks[1]]) < 0.999  # different layers, different directions


def test_old_debias_method_names_still_work():
    from saescope.bias.debias.config import DebiasConfig

    assert DebiasConfig(method="project").method == "erase" and DebiasConfig(method="clamp").method == "cap"
    assert DebiasConfig(features="3,5", strengths="0.5,1", layers="12,14").features == [3, 5]
    with pytest.raises(SaescopeError, match="comma-separated"):
        DebiasConfig(layers="12,x")
