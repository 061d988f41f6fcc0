"""The training twins in the shape of WinoBias type 1 and CrowS-Pairs (bias.training_pairs), and their
columns in the debias selection table."""

import json

import pytest

from saescope.bias.benchmarks import twin_preference
from saescope.bias.data import DATA_DIR, BiasData, SelectionPrompts
from saescope.bias.debias.selection import SelectionScorer
from saescope.bias.training_pairs import coreference_pairs, stereotype_pairs
from saescope.errors import SaescopeError


def _words(text: str) -> list[str]:
    return text.rstrip(".").split()


def test_coreference_twins_differ_in_the_pronoun_only_and_follow_the_referent():
    selection = SelectionPrompts.load()
    pairs = coreference_pairs(selection)
    assert len(pairs) == 8 * len(selection.coreference) == 224
    assert {p.group for p in pairs} == {"A", "B"}
    female, male = set(selection.female_occupations), set(selection.male_occupations)
    for pair in pairs:
        stereo, anti = _words(pair.stereo), _words(pair.anti)
        diff = [(s, a) for s, a in zip(stereo, anti, strict=True) if s != a]
        assert len(diff) == 1 and {diff[0][0], diff[0][1]} in ({"she", "he"}, {"her", "his"}, {"her", "him"})
        a, b = (occ for occ in sorted(female | male, key=len, reverse=True) if f"The {occ} " in pair.stereo
                or f"the {occ} " in pair.stereo)
        first = a if pair.stereo.index(a) < pair.stereo.index(b) else b
        second = b if first == a else a
        referent = first if pair.group == "A" else second
        assert (referent in female) == (diff[0][0] == "she" or diff[0][0] == "her")  # pro: the referent's stereotype
        assert (first in female) != (second in female)  # one female- and one male-stereotyped occupation


def test_stereotype_twins_swap_the_subject_and_are_disjoint_from_the_evaluation():
    selection = SelectionPrompts.load()
    pairs = stereotype_pairs(selection)
    subjects = list(zip(selection.female_subjects, selection.male_subjects))
    assert len(pairs) == len(subjects) * (len(selection.predicates["female"]) + len(selection.predicates["male"]))
    for pair in pairs:
        f, m = next((f, m) for f, m in subjects if pair.stereo.startswith(f + " ") or pair.stereo.startswith(m + " "))
        female_side = pair.stereo.startswith(f + " ")
        assert female_side == (pair.group == "female")
        assert pair.anti == (pair.stereo.replace(f, m, 1) if female_side else pair.stereo.replace(m, f, 1))
    data = BiasData.load()
    evaluation = {p.stereo for p in data.crows + data.winobias} | {p.anti for p in data.crows + data.winobias}
    written = [p.stereo for p in pairs + coreference_pairs(selection)]
    assert not evaluation & set(written)
    named = {o.name for o in data.occupations if any(f"the {o.name} " in s.lower() for s in written)}
    assert not named  # no evaluation occupation is one of the twins' entities ("the preschool teacher" is not "the teacher")


def test_bad_coreference_templates_and_clauses_are_refused(tmp_path):
    data = json.loads((DATA_DIR / "prompts" / "selection.json").read_text())
    bad = tmp_path / "selection.json"
    for broken, message in [({"coreference_templates": [{"template": "The {A} hired {he}.", "referent": "A"}]},
                             "each coreference template needs"),
                            ({"coreference_templates": [{"template": "The {A} hired the {B} and {he} {his}.",
                                                         "referent": "B"}]}, "one of"),
                            ({"coreference_templates": [{"template": "The {A} hired the {B}; {he} left.",
                                                         "referent": "C"}]}, "referent 'A' or 'B'"),
                            ({"stereotype_predicates": {"women": ["cried."]}}, "'stereotype_predicates' must map"),
                            ({"stereotype_predicates": {"female": []}}, "key 'female' must be a non-empty list")]:
        bad.write_text(json.dumps({**data, **broken}))
        with pytest.raises(SaescopeError, match=message):
            SelectionPrompts.load(bad)


def test_the_selection_table_reports_both_preferences(lm):
    full = SelectionPrompts.load()
    selection = SelectionPrompts(full.female_occupations[:4], full.male_occupations[:4], full.templates[:1],
                                 full.definitional[::8], full.female_subjects[:3], full.male_subjects[:3],
                                 coreference=full.coreference[::7], predicates={k: v[:2] for k, v in full.predicates.items()})
    scorer = SelectionScorer(lm, selection, ce_tokens=256)
    assert len(coreference_pairs(selection)) == 32 and len(stereotype_pairs(selection)) == 12
    plain = scorer.twin_scores(None)
    assert plain["coref_preference"] == pytest.approx(twin_preference(lm, coreference_pairs(selection)).preference["all"])
    assert plain["pair_preference"] == pytest.approx(twin_preference(lm, stereotype_pairs(selection)).preference["all"])
    bare = SelectionScorer(lm, SelectionPrompts(selection.female_occupations, selection.male_occupations,
                                                selection.templates, selection.definitional, [], []), ce_tokens=256)
    assert bare.twin_scores(None) == {}


def test_plan_reports_the_twins_for_the_pareto_front(lm):
    from saescope import load_sae
    from saescope.bias.debias.plan import plan_debias

    full = SelectionPrompts.load()
    selection = SelectionPrompts(full.female_occupations[:4], full.male_occupations[:4], full.templates[:1],
                                 full.definitional[::8], full.female_subjects[:3], full.male_subjects[:3],
                                 coreference=full.coreference[::7], predicates={k: v[:2] for k, v in full.predicates.items()})
    plan = plan_debias(lm, load_sae("default"), "erase", layers=[12, 14], selection=selection)
    table = plan.candidates
    assert table.coref_preference.notna().tolist() == table.pareto.tolist()
    assert set(plan.twins["plain"]) == {"coref_preference", "pair_preference"}
    assert ((table.pair_preference.dropna() >= 0) & (table.pair_preference.dropna() <= 1)).all()
