"""The debias room: a method registered from outside is planned, evaluated, saved and loaded like the
built-in ones; the folder is the CLI's; list options are parsed from the command line."""

from __future__ import annotations

import json

import pytest

from bias.test_bias import small_data
from helpers import saescope
from saescope.bias.data import SelectionPrompts
from saescope.bias.debias import (
    DebiasConfig,
    DebiasRun,
    MethodContext,
    method_names,
    plan_debias,
    register_method,
    run_debias,
)
from saescope.errors import SaescopeError
from saescope.sae.formats import load_sae
from saescope.steering import FeatureEdit, FeatureSteering


@register_method("test-first-stereotype")
def _first_stereotype(ctx: MethodContext):
    ids = ctx.table[ctx.table.kind == "stereotype"].feature.head(2).astype(int).tolist()
    return [(f"first {n}", ids[:n], FeatureSteering(ctx.sae, [FeatureEdit(i, "ablate", 0.0) for i in ids[:n]],
                                                   ctx.hook)) for n in (1, 2)]


def _selection() -> SelectionPrompts:
    full = SelectionPrompts.load()
    return SelectionPrompts(full.female_occupations[:6], full.male_occupations[:6], full.templates[:2],
                            full.definitional[::4], full.female_subjects[:6], full.male_subjects[:6])


@pytest.fixture(scope="module")
def ranked(lm):
    """The small selection and its gender-feature ranking, computed once for the tests below."""
    from saescope.bias.gender_features import rank_gender_features

    selection = _selection()
    return selection, rank_gender_features(lm, load_sae("default"), selection=selection)


def test_auto_puts_every_method_on_one_pareto_table(lm, ranked):
    selection, table = ranked
    plan = plan_debias(lm, load_sae("default"), "auto", methods=["test-first-stereotype", "ablate"], strengths=[2],
                       selection=selection, table=table)
    table = plan.candidates
    assert list(table.method) == ["test-first-stereotype", "test-first-stereotype", "ablate"]
    assert list(table.candidate[:2]) == ["test-first-stereotype: first 1", "test-first-stereotype: first 2"]
    assert table.candidate.iloc[2].startswith("ablate: ") and table.candidate.iloc[2].endswith(" features")
    assert table.chosen.sum() == 1 and table.pareto.any() and (table.build_seconds >= 0).all()
    best = table[table.admissible].dev_reduction.max()
    assert table[table.chosen].dev_reduction.iloc[0] == best and table[table.chosen].pareto.iloc[0]
    with pytest.raises(SaescopeError, match="unknown debias method 'nope' in methods"):
        DebiasConfig(method="auto", methods=["erase", "nope"])


def test_a_registered_method_runs_saves_and_loads(lm, ranked, tmp_path):
    assert "test-first-stereotype" in method_names() and {"erase", "ablate", "cap", "steer", "circuit"} <= set(method_names())
    selection, table = ranked
    run = run_debias(lm, load_sae("default"), "test-first-stereotype", data=small_data(4), ce_tokens=128,
                     selection=selection, table=table, progress=False)
    assert run.method == "test-first-stereotype" and run.candidate in ("first 1", "first 2")
    assert len(run.candidates) == 2 and run.candidates.chosen.sum() == 1
    assert [e.feature for e in run.intervention.edits] == run.features
    out = run.save(tmp_path / "debias")
    assert sorted(p.name for p in out.iterdir()) == ["debias.json", "features.csv", "intervention.json",
                                                      "metrics.json", "report.html", "selection.csv"]
    again = DebiasRun.load(out)
    assert (again.method, again.candidate, again.features) == (run.method, run.candidate, run.features)
    assert again.evaluation.changes == pytest.approx(run.evaluation.changes)
    assert again.intervention.to_dict() == run.intervention.to_dict()
    assert json.loads((out / "debias.json").read_text())["settings"]["precision"]["dtype"] == "float32"


def test_config_takes_lists_and_the_old_comma_strings():
    assert DebiasConfig(layers=[12, 14], strengths=[0.5], features=[3]).layers == [12, 14]
    assert DebiasConfig(layers="12,14", features="3,5").features == [3, 5]
    with pytest.raises(SaescopeError, match="layers must be numbers"):
        DebiasConfig(layers=["x"])
    with pytest.raises(SaescopeError, match="unknown debias method 'nope'"):
        DebiasConfig(method="nope")


def test_list_options_are_parsed_and_named_in_errors(tmp_path):
    result = saescope("bias", "debias", "--layers", "12,x", "--out", str(tmp_path / "d"))
    assert result.returncode == 2 and "--layers must be comma-separated int values, got '12,x'" in result.stderr
    assert not (tmp_path / "d").exists()
    result = saescope("bias", "debias", "--features", "auto,3", "--out", str(tmp_path / "d"))
    assert result.returncode == 2 and "--features" in result.stderr


def test_the_studies_live_under_bias_and_the_old_verbs_still_work():
    top = saescope("--help").stdout
    assert " bias " in top and " shift " not in top and " debias " not in top  # the old verbs are hidden
    bias = saescope("bias", "--help").stdout
    assert all(f" {verb} " in bias for verb in ("eval", "features", "debias", "shift", "gender-vector"))
    for old, new in ((["debias"], ["bias", "debias"]), (["shift", "run"], ["bias", "shift", "run"]),
                     (["edit", "gender-vector"], ["bias", "gender-vector"])):
        before, after = saescope(*old, "--help"), saescope(*new, "--help")
        assert before.returncode == after.returncode == 0 and "--out" in before.stdout and "--out" in after.stdout
