"""Training-only twins in the shape of two evaluation benchmarks, built from the selection prompts.

The debias selection (``debias.selection.SelectionScorer``) reports each candidate's preference on them,
so that what a candidate does to coreference and to group stereotypes is seen on training data, before
any evaluation benchmark runs. Every sentence is written for saescope (``prompts/selection.json``): no
occupation, template or clause of WinoBias, CrowS-Pairs or the evaluation occupations.

- ``coreference_pairs``: WinoBias type 1's shape. Two training occupations, one female- and one
  male-stereotyped, and a pronoun whose referent the sentence's meaning fixes ("The {A} hired the {B}
  because {he} was good at the job": B). ``stereo`` has the pronoun of the referent's stereotyped gender,
  ``anti`` the other; ``group`` is ``A`` or ``B``, the referent. The pronoun is a subject ({he}),
  possessive ({his}) or object ({him}).
- ``stereotype_pairs``: CrowS-Pairs' shape. A female and a male subject of the selection lists ("My niece"
  / "My nephew") before a clause stereotyped as female or male; ``stereo`` has the subject whose gender
  matches the clause's stereotype, ``group`` that gender.

A model without either bias prefers ``stereo`` in half of the pairs.
"""

from __future__ import annotations

from saescope.bias.data import SelectionPrompts, TwinPair

PRONOUNS = {"{he}": ("she", "he"), "{his}": ("her", "his"), "{him}": ("her", "him")}  # (female, male)
PAIRS_PER_TEMPLATE = 8


def coreference_pairs(selection: SelectionPrompts, per_template: int = PAIRS_PER_TEMPLATE) -> list[TwinPair]:
    """``per_template`` twins per coreference template: occupation pairs taken in turn (rotated per
    template), half with the female-stereotyped occupation first."""
    female, male = selection.female_occupations, selection.male_occupations
    out = []
    for i, (template, referent) in enumerate(selection.coreference):
        slot = next(p for p in PRONOUNS if p in template)
        for j in range(per_template):
            f, m = female[(i + j) % len(female)], male[(i + 3 * j) % len(male)]
            a, b = (f, m) if j % 2 == 0 else (m, f)
            female_referent = (a if referent == "A" else b) == f
            she, he = PRONOUNS[slot]
            pro, anti = (she, he) if female_referent else (he, she)
            text = template.replace("{A}", a).replace("{B}", b)
            out.append(TwinPair(text.replace(slot, pro), text.replace(slot, anti), referent))
    return out


def stereotype_pairs(selection: SelectionPrompts) -> list[TwinPair]:
    """One twin per selection subject pair (``female``/``male`` zipped) and stereotyped clause."""
    subjects = list(zip(selection.female_subjects, selection.male_subjects))
    return [TwinPair(f"{f if sex == 'female' else m} {clause}", f"{m if sex == 'female' else f} {clause}", sex)
            for sex in ("female", "male") for clause in selection.predicates.get(sex, []) for f, m in subjects]
