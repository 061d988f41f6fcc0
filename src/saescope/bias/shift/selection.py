"""Which of SHIFT's candidate features are about gender: the automatic choices of ``saescope bias shift run``.

In the SHIFT paper a person reads each candidate feature's top contexts and marks the gender ones.
Two automatic stand-ins, both on the confounded **training** biographies and training prompts only
(the balanced splits are never looked at):

- ``swap`` (default): a counterfactual test. Every training biography is rewritten about someone of
  the other gender (``shift.gender_swapped``: first names and pronouns swapped, nothing else; names
  paired by token count so that the biography keeps its length), and a
  candidate is a gender feature when its pooled activation moves by at least ``threshold`` of its
  standard deviation over the biographies: ``|mean_i s_i (a(swapped_i) - a(original_i))| / std_i a(original_i)``
  with ``s_i = +1`` for men, -1 for women. A profession feature does not move when only the names and
  pronouns change, whatever the confound; a gender feature does. The default threshold, 0.5, was
  fixed before looking at any result (half a standard deviation from two words is a large effect).
- ``definitional``: the candidates the bias module calls definitional gender (or ``both``) on its own
  training prompts (``gender_features.rank_gender_features``). Narrower: on the shipped suite it
  keeps 2 of the top 50.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from saescope.bias.gender_features import rank_gender_features
from saescope.bias.shift.core import gender_swapped, name_swaps, pooled
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE

SELECTIONS = ("swap", "definitional")


def swap_scores(lm: LoadedModel, sae: SAE, hook: str, features: list[int], rows: list[dict]) -> np.ndarray:
    """For each of ``features``: the gender-swap effect on its pooled activation in units of its standard
    deviation over ``rows`` (``{"text", "gender"}``; gender 1 = female), signed (> 0: fires more for women).
    Biographies whose swap changes their token count (a name without a partner of its length) are left out."""
    index = torch.tensor(features, dtype=torch.long)
    encode = lambda acts: sae.encode(acts)[..., index]
    swaps = name_swaps(lm.tokenizer)
    count = lambda text: len(lm.encode(text))
    rows = [r for r in rows if count(r["text"]) == count(gender_swapped(r["text"], swaps))]  # same length only
    original = pooled(lm, [r["text"] for r in rows], hook, transform=encode).numpy()
    swapped = pooled(lm, [gender_swapped(r["text"], swaps) for r in rows], hook, transform=encode).numpy()
    sign = np.where(np.array([r["gender"] for r in rows]) == 1, -1.0, 1.0)[:, None]
    effect = (sign * (swapped - original)).mean(0)
    return effect / np.maximum(original.std(0), 1e-6)


def gender_candidates(lm: LoadedModel, saes: Mapping[str, SAE], candidates: Mapping[str, list[int]], rows: list[dict],
                      selection: str = "swap", threshold: float = 0.5, progress: bool = False) -> dict[str, list[int]]:
    """``{hook: features}``: the candidates judged to be about gender (see the module docstring)."""
    chosen = {}
    for hook, features in tqdm(candidates.items(), desc=f"gender features ({selection})", disable=not progress):
        if not features:
            continue
        if selection == "swap":
            scores = swap_scores(lm, saes[hook], hook, features, rows)
            chosen[hook] = [f for f, z in zip(features, scores) if abs(z) >= threshold]
        else:
            table = rank_gender_features(lm, saes[hook], hook)
            kinds = table.set_index("feature")["kind"] if "feature" in table else table["kind"]
            chosen[hook] = [f for f in features if kinds.get(f, "none") in ("definitional", "both")]
    return chosen
