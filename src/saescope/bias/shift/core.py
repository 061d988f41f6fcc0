"""SHIFT (Marks et al. 2024, §4): remove a probe's reliance on gender by ablating the SAE features it
uses that are about gender, then retrain it — on the offline biography set of ``shift.data``.

1. A logistic-regression probe reads the mean-pooled residual stream at ``readout`` (positions after
   the start token) and is trained on the **confounded** split (professors are men, nurses women).
2. Its logit (a ``circuits`` metric with a ``readout``: the forward pass stops at that layer) is
   attributed to the features of every SAE of the suite up to that layer (attribution patching
   against zero ablation, no pairs), over training biographies.
3. Among the ``top`` features by |effect|, the gender features are ablated at every position: by
   default those whose activation moves when names and pronouns are swapped (``shift_selection``),
   or those the bias module classifies as definitional gender, or the ones given.
4. The probe is retrained on the ablated training activations; profession and gender accuracy (how
   often its prediction matches the gender label, through the confound) and worst-group accuracy on
   the balanced test split.

Baselines: the original probe; random ablation of as many features of the same SAEs; the oracle (a
probe trained on balanced data); deleting the gendered tokens (names, pronouns) from the inputs;
ablating only the gender features of the lowest SAE (the "embedding-level" critique); a
concept-bottleneck probe on the pooled activations of the top non-gender features. Every figure is
the mean (and spread) over ``seeds`` resamplings of 80 % of the training biographies.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from saescope.activations.text import text_activations
from saescope.bias.shift.config import ShiftConfig
from saescope.bias.shift.data import NAMES
from saescope.circuits.data import PairBatch
from saescope.model.hooks import Applicable
from saescope.model.loading import LoadedModel

__all__ = ["ShiftConfig", "GROUPS", "LinearReadout", "pooled", "fit_probe", "probe_as_readout", "scores",
           "without_gendered_tokens", "gender_swapped"]
GENDERED = {"he": "they", "she": "they", "his": "their", "her": "their", "him": "them", "He": "They", "She": "They",
            "His": "Their", "Her": "Their", "Him": "Them"}


class LinearReadout:
    """A linear probe on the mean-pooled activations at ``readout`` as a circuits metric (``[n]`` logits);
    ``transform`` maps the activations first (e.g. an SAE: its reconstruction), as in ``pooled``."""

    def __init__(self, readout: str, weight: Tensor, bias: float,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.readout, self.weight, self.bias, self.transform = readout, weight, bias, transform
        self.__name__ = f"probe@{readout}"

    def __call__(self, acts: Tensor, batch: PairBatch) -> Tensor:
        acts = acts[:, 1:].float()
        acts = self.transform(acts) if self.transform is not None else acts
        return acts.mean(1) @ self.weight.to(acts.device) + self.bias


@torch.no_grad()
def pooled(lm: LoadedModel, texts: list[str], hook: str, intervention: Applicable | None = None,
           batch_size: int = 32, transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``[len(texts), d]`` mean activation at ``hook`` over each text's tokens (start token, sinks, padding
    left out); ``transform`` maps the activations first (e.g. to some SAE features)."""
    return text_activations(lm, hook, texts, read="mean", batch_size=batch_size, start=True,
                            intervention=intervention, transform=transform)


def fit_probe(x: np.ndarray, y: np.ndarray, seed: int = 0, c: float = 1e-3):
    """A standardized logistic-regression probe (scikit-learn pipeline) with inverse L2 strength ``c``
    (``ShiftConfig.probe_c`` says how its default was chosen)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed)).fit(x, y)


def probe_as_readout(probe, readout: str, transform: Callable[[Tensor], Tensor] | None = None) -> LinearReadout:
    """The probe's logit as a linear function of the pooled activations (after ``transform``, if the probe
    was trained on transformed ones)."""
    scaler, model = probe[0], probe[1]
    weight = model.coef_[0] / scaler.scale_
    bias = float(model.intercept_[0] - (weight * scaler.mean_).sum())
    return LinearReadout(readout, torch.tensor(weight, dtype=torch.float32), bias, transform)


GROUPS = {(1, 0): "professor_male", (1, 1): "professor_female", (0, 0): "nurse_male", (0, 1): "nurse_female"}
"""(profession, gender) -> the group's name in ``scores`` (profession 1 = professor, gender 1 = female)."""


def scores(probe, x: np.ndarray, rows: list[dict]) -> dict[str, float]:
    """Profession accuracy, gender accuracy (prediction vs gender through the confound: professor = male),
    worst-group profession accuracy over the four (profession, gender) groups, and each group's accuracy
    (``professor_male_acc`` ...; NaN for a group with no rows)."""
    predicted = probe.predict(x)
    profession = np.array([r["profession"] for r in rows])
    gender = np.array([r["gender"] for r in rows])
    groups = {}
    for (p, g), name in GROUPS.items():
        members = (profession == p) & (gender == g)
        groups[f"{name}_acc"] = float((predicted[members] == p).mean()) if members.any() else float("nan")
    present = [v for v in groups.values() if not np.isnan(v)]
    return {"profession_acc": float((predicted == profession).mean()),
            "gender_acc": float((predicted == 1 - gender).mean()), "worst_group_acc": float(min(present))} | groups


def without_gendered_tokens(text: str) -> str:
    """The critics' baseline: first names become "Alex", pronouns become "they"/"their"/"them"."""
    names = {n for split in NAMES.values() for group in split.values() for n in group}
    text = re.sub(r"\b(" + "|".join(sorted(names)) + r")\b", "Alex", text)
    return re.sub(r"\b(" + "|".join(GENDERED) + r")\b", lambda m: GENDERED[m.group(1)], text)


_SWAP = {"he": "she", "she": "he", "his": "her", "him": "her", "He": "She", "She": "He", "His": "Her", "Him": "Her"}
_NOT_A_NOUN = {"as", "and", "to", "for", "with", "in", "at", "on", "when", "because", "that", "so", "but", "or"}


def name_swaps(tokenizer: object | None = None) -> dict[str, str]:
    """Each first name of ``shift.data.NAMES`` -> a name of the other gender (same split). With a
    tokenizer, partners have the same token count (with and without a leading space), so a swapped
    biography has exactly as many tokens as the original and mean-pooled activations stay comparable."""
    def width(name: str) -> tuple[int, int]:
        if tokenizer is None:
            return (0, 0)
        return tuple(len(tokenizer.encode(text, add_special_tokens=False)) for text in (name, " " + name))

    swap: dict[str, str] = {}
    for split in NAMES.values():
        for source, target in (("male", "female"), ("female", "male")):
            partners = split[target]
            for i, name in enumerate(split[source]):
                same = [p for p in partners if width(p) == width(name)] or partners
                swap[name] = same[i % len(same)]
    return swap


def gender_swapped(text: str, swaps: dict[str, str] | None = None) -> str:
    """The same biography about someone of the other gender: first names swapped (``name_swaps``) and
    pronouns swapped (``her`` becomes ``his`` before a noun, else ``him``). Used to find the features
    that respond to gender alone."""
    swap = swaps or name_swaps()
    text = re.sub(r"\b(" + "|".join(sorted(swap)) + r")\b", lambda m: swap[m.group(1)], text)

    def pronoun(m: re.Match) -> str:
        word, following = m.group(1), m.group(2)
        if word.lower() != "her":
            return _SWAP[word] + following
        noun_follows = bool(re.match(r" [A-Za-z]", following)) and following.strip().lower() not in _NOT_A_NOUN
        new = "his" if noun_follows else "him"
        return (new.capitalize() if word[0].isupper() else new) + following
    return re.sub(r"\b(he|she|his|him|her|He|She|His|Him|Her)\b( [A-Za-z]+|)", pronoun, text)
