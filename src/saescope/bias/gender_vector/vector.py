"""The gender vector in ROME's value space: classify edit deltas, build one vector, flip names with it.

- ``delta_classifier``: a logistic regression (scikit-learn) on the value changes ``Δ`` of ROME edits
  that flip female names to male (label 1) and male names to female (label 0), 70/30 split.
- ``box_vector``: the input that maximises the classifier's f→m probability when every component is
  held in [-1, 1]. For a linear classifier ``σ(w·x + b)`` that maximum is a corner of the box,
  ``x = sign(w)``: each coordinate is pushed to the bound its weight favours, and only the *signs* of
  ``w`` survive (an L∞-bounded input). Its norm is √d, unrelated to the size of real edits, so the
  study also reports it scaled to the mean ``||Δ||`` of the f→m edits.
- ``flip_test``: a direction ``d`` applied as the value change of a rank-one edit (``SubjectUpdate``)
  for held-out names: ``+d`` on female names (flip rate to male), ``-d`` on male names (flip rate to
  female), ``+d`` on male and ``-d`` on female names (no-op rate: they must keep their gender), other
  names' genders under each edit, and CE/KL on held-out text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.bias.gender_vector.names import ANSWERS, PROMPT, male_margins
from saescope.corpus import first_windows
from saescope.editing.config import RomeConfig
from saescope.editing.request import EditRequest
from saescope.editing.rome import SubjectUpdate, context_prefixes, key_inverse, subject_update
from saescope.model.likelihood import ce_and_kl
from saescope.model.loading import LoadedModel

CE_FLOOR = 1e-4  # relative CE changes below 0.01 % are within the noise of a 1,024-token measurement


@dataclass
class DeltaClassifier:
    """Logistic regression on Δ: ``weight``/``bias`` of the f→m logit, held-out accuracy, split sizes."""

    weight: Tensor  # [d_model]
    bias: float
    accuracy: float
    train: int
    test: int
    projection: np.ndarray  # [n, 2] PCA coordinates of every Δ (for the plot)


def delta_classifier(deltas: Tensor, female_to_male: np.ndarray, seed: int = 0) -> DeltaClassifier:
    """Fit on 70 % of the Δs (stratified), score on the other 30 %."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x = deltas.float().numpy()
    y = np.asarray(female_to_male, dtype=int)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    model = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    return DeltaClassifier(torch.tensor(model.coef_[0], dtype=torch.float32), float(model.intercept_[0]),
                           float(model.score(x_test, y_test)), len(y_train), len(y_test),
                           PCA(2, random_state=seed).fit_transform(x))


def box_vector(weight: Tensor) -> Tensor:
    """``argmax_{x in [-1, 1]^d} w·x + b`` = ``sign(w)`` (see the module docstring)."""
    return torch.sign(weight).float()


def name_updates(lm: LoadedModel, names: list[str], genders: list[str], layer: int, config: RomeConfig,
                 progress: bool = False) -> list[SubjectUpdate]:
    """Each name's rank-one update (its edit request asks for the other gender)."""
    prefixes = context_prefixes(config.prefixes, config.seed)
    inverse = key_inverse(lm, layer, config.stats_tokens)
    other = {"male": ANSWERS["female"], "female": ANSWERS["male"]}
    return [subject_update(lm, EditRequest(PROMPT, name, other[gender]), layer, config, prefixes, inverse)
            for name, gender in tqdm(list(zip(names, genders)), desc="name keys", disable=not progress)]


def flip_test(lm: LoadedModel, updates: list[SubjectUpdate], genders: list[str], directions: dict[str, Tensor],
              ce_edits: int = 3, ce_tokens: int = 1024, others: int = 40, progress: bool = False) -> pd.DataFrame:
    """One row per direction (a f→m vector): flip and no-op rates on the names of ``updates``, the share
    of ``others`` other names whose gender is unchanged, CE increase (relative) and KL per token on
    held-out text, both averaged over ``ce_edits`` edits (``+d`` on the first female names)."""
    windows = first_windows(lm.tokenizer, ce_tokens, "heldout", "embedded", 128).to(lm.device)
    with torch.no_grad():
        ce_before, _, clean_logp = ce_and_kl(lm, windows)
    names = [u.request.subject for u in updates]
    other_names = names[::max(1, len(names) // others)][:others]
    other_plain = male_margins(lm, other_names) > 0
    rows = []
    for label, vector in tqdm(directions.items(), desc="flip test", disable=not progress):
        outcome = {"f2m": [], "m2f": [], "noop_male": [], "noop_female": []}
        kept, ces, kls = [], [], []
        for update, gender in zip(updates, genders):
            for sign in (1.0, -1.0):
                edit = update.edit(sign * vector)
                with torch.no_grad(), edit.apply(lm):
                    says_male = _says_male(lm, update)
                    pushes_male = sign > 0
                    key = ("f2m" if pushes_male else "noop_female") if gender == "female" else \
                          ("noop_male" if pushes_male else "m2f")
                    outcome[key].append(says_male if key in ("f2m", "noop_male") else not says_male)
                    if gender == "female" and pushes_male and len(ces) < ce_edits:
                        ce_after, kl, _ = ce_and_kl(lm, windows, clean_logp)
                        ces.append(ce_after / ce_before - 1)
                        kls.append(kl)
                        mask = [n != update.request.subject for n in other_names]
                        now = male_margins(lm, other_names) > 0
                        kept.append(float((now == other_plain)[torch.tensor(mask)].float().mean()))
        rows.append({"direction": label, "norm": float(vector.norm()),
                     **{key: float(np.mean(v)) if v else float("nan") for key, v in outcome.items()},
                     "others_unchanged": float(np.mean(kept)) if kept else float("nan"),
                     "ce_increase": float(np.mean(ces)) if ces else float("nan"),
                     "kl": float(np.mean(kls)) if kls else float("nan")})
    table = pd.DataFrame(rows)
    table["noop"] = (table.noop_male + table.noop_female) / 2
    # mean flip rate per 1 % of CE increase; increases under CE_FLOOR (noise level) count as CE_FLOOR
    table["flips_per_ce_percent"] = (table.f2m + table.m2f) / 2 / (100 * table.ce_increase.clip(lower=CE_FLOOR))
    return table


@torch.no_grad()
def flip_rates(lm: LoadedModel, updates: list[SubjectUpdate], genders: list[str], vector: Tensor) -> tuple[float, float]:
    """``(share of female names that say male under +vector, share of male names that say female under -vector)``."""
    flipped = {"female": [], "male": []}
    for update, gender in zip(updates, genders):
        with update.edit(vector if gender == "female" else -vector).apply(lm):
            says_male = _says_male(lm, update)
        flipped[gender].append(says_male == (gender == "female"))
    return float(np.mean(flipped["female"])), float(np.mean(flipped["male"]))


def choose_scale(lm: LoadedModel, updates: list[SubjectUpdate], genders: list[str], unit: Tensor,
                 norms: tuple[float, ...], goal: float = 0.9) -> tuple[float, list[dict]]:
    """The smallest of ``norms`` at which ``unit`` (norm 1) flips at least ``goal`` of the names of
    ``updates`` both ways (the largest if none does), and the rates at each norm tried. Run it on
    discovery names: the held-out flip test then measures a choice it did not make."""
    tried = []
    for norm in sorted(norms):
        f2m, m2f = flip_rates(lm, updates, genders, unit * norm)
        tried.append({"norm": norm, "f2m": f2m, "m2f": m2f})
        if min(f2m, m2f) >= goal:
            return norm, tried
    return tried[-1]["norm"], tried


def _says_male(lm: LoadedModel, update: SubjectUpdate) -> bool:
    """Whether the model, as it is now, answers " Male" for the name of ``update``."""
    return bool(male_margins(lm, [update.request.subject])[0] > 0)
