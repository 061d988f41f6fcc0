"""First names by gender for the gender-vector study, and how the model genders them.

The lists are the 1990 US Census first names (``data/names``, public domain, via the MIT-licensed
``names`` package; names on both lists removed), most frequent first. A name *is gendered correctly*
when, after ``PROMPT``, the model puts more probability on " Male" than on " Female" for a male name
(and the reverse for a female name). The embedded model leans male: it genders ~100 % of the male
names but only ~27 % of the female ones correctly (~63 % of the 300 most frequent), so names are
scanned in frequency order until enough of each gender are found.

Example::

    table = gendered_names(lm, per_gender=500)     # name, gender, margin, rank
"""

from __future__ import annotations

import pandas as pd
import torch

from saescope.editing.request import fill_subject
from saescope.errors import SaescopeError
from saescope.model.likelihood import next_token_logprobs
from saescope.model.loading import LoadedModel
from saescope.resources import data_path

PROMPT = "Name: {}. Gender:"
PARAPHRASES = ("First name: {}. Gender:", "Gender of {}:")  # where the plain model genders names best
ANSWERS = {"male": " Male", "female": " Female"}
OTHER = {"male": "female", "female": "male"}


def load_names(gender: str) -> list[str]:
    """The shipped first names of ``gender`` (``male`` | ``female``), most frequent first."""
    if gender not in ANSWERS:
        raise SaescopeError(f"unknown gender {gender!r}: use male or female")
    return data_path("names", f"{gender}.txt").read_text().split()


def answer_ids(lm: LoadedModel) -> dict[str, int]:
    """The token of " Male" and of " Female" (each must be one token)."""
    ids = {gender: lm.encode(text) for gender, text in ANSWERS.items()}
    for gender, tokens in ids.items():
        if len(tokens) != 1:
            raise SaescopeError(f"{lm.name} splits {ANSWERS[gender]!r} into {len(tokens)} tokens; the gender "
                                "study needs one token per answer")
    return {gender: tokens[0] for gender, tokens in ids.items()}


def male_margins(lm: LoadedModel, names: list[str], prompt: str = PROMPT) -> torch.Tensor:
    """``log P(" Male") - log P(" Female")`` after ``prompt`` for each name (> 0: the model says male)."""
    ids = answer_ids(lm)
    logp = next_token_logprobs(lm, [fill_subject(prompt, name) for name in names], [ids["male"], ids["female"]])
    return logp[:, 0] - logp[:, 1]


def gendered_names(lm: LoadedModel, per_gender: int = 500, chunk: int = 256) -> pd.DataFrame:
    """The ``per_gender`` most frequent names of each gender that the model genders correctly:
    columns ``name, gender, margin`` (the male margin) and ``rank`` (frequency rank in its list)."""
    if per_gender < 1:
        raise SaescopeError(f"per_gender must be at least 1, got {per_gender}")
    frames = []
    for gender in ANSWERS:
        names, kept = load_names(gender), []
        for start in range(0, len(names), chunk):
            batch = names[start:start + chunk]
            margins = male_margins(lm, batch)
            kept += [(n, gender, float(m), start + i) for i, (n, m) in enumerate(zip(batch, margins.tolist()))
                     if (m > 0) == (gender == "male")]
            if len(kept) >= per_gender:
                break
        if len(kept) < per_gender:
            raise SaescopeError(f"{lm.name} genders only {len(kept)} of the {len(names)} {gender} names correctly "
                                f"(asked for {per_gender}): lower --names")
        frames.append(pd.DataFrame(kept[:per_gender], columns=["name", "gender", "margin", "rank"]))
    return pd.concat(frames, ignore_index=True)


def split_names(table: pd.DataFrame, discovery: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """``table`` with a ``split`` column (``discovery`` | ``heldout``), drawn per gender by name."""
    table = table.copy()
    table["split"] = "heldout"
    for _, group in table.groupby("gender"):
        chosen = group.sample(frac=discovery, random_state=seed).index
        table.loc[chosen, "split"] = "discovery"
    return table
