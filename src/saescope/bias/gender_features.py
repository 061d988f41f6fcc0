"""Rank SAE features by their association with gender, and tell stereotype from definitional gender.

Two measurements, both on training data only (``data/bias/prompts/selection.json`` and the
contrast module's ``gender_train.jsonl``; never the evaluation benchmarks):
- **stereotype**: a feature's activation on the last token of an occupation (``"...the midwife"``
  vs ``"...the pilot"``) for female- vs male-stereotyped training occupations: mean difference
  and Welch's t-test (``scipy.stats.ttest_ind``);
- **definitional**: its activation on the last token of gendered subjects (``"My niece"`` vs
  ``"My nephew"``) and its mean change between the female and male side of the gender contrast
  pairs (``contrast.pair_activations``), with a paired t-test.
Each feature gets a ``kind``: ``stereotype`` (stereotype effect significant, definitional effect
under half of it), ``definitional`` (definitional effect significant, stereotype effect under half
of it), ``both`` or ``none``. Significance is Benjamini-Hochberg q < 0.05 over all features.

``gate`` marks the features that detect an intrinsically gendered word (the tokens ``debias
--method project`` must leave alone): they fire on >= 25% of one gender's definitional subjects, fire
differently for the two genders (|female - male| > half the larger mean), stay under 10% of that
level on the training occupations, and fire on < 2% of ordinary text tokens (``corpus_rate``,
2,048 training-split tokens). Many ``definitional`` features are too broad for that (they fire on
half of all text); the gate features are the narrow ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from saescope.activations.read import hook_activations
from saescope.activations.text import text_activations
from saescope.bias.data import SelectionPrompts
from saescope.corpus import first_windows
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.steering.contrast.pairs import pairs_path, read_pairs
from saescope.steering.contrast.stats import feature_tests, pair_activations


@torch.inference_mode()
def last_token_acts(lm: LoadedModel, hook: str, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """``[len(texts), d_model]`` residual at ``hook`` on the last token of each text, read after the
    document-start token: a one-token subject (``"Peter"``) is then position 1, never the attention
    sink at position 0 (reading it there gave "gate" features that were sink artefacts)."""
    return text_activations(lm, hook, texts, read="last", batch_size=batch_size, start=True)


def occupation_prefixes(selection: SelectionPrompts, female: bool) -> list[str]:
    """Training prompts cut right after the occupation: ``"Yesterday the midwife"``."""
    occupations = selection.female_occupations if female else selection.male_occupations
    return [t.split("{occupation}")[0] + o for o in occupations for t in selection.templates]


def subject_prefixes(selection: SelectionPrompts, female: bool) -> list[str]:
    """Definitional subjects alone (``"My niece"``), the last token being the gendered word."""
    return selection.female_subjects if female else selection.male_subjects


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    moving = (a.std(0) > 0) | (b.std(0) > 0)
    t, p = np.zeros(a.shape[1]), np.ones(a.shape[1])
    t[moving], p[moving] = stats.ttest_ind(a[:, moving], b[:, moving], axis=0, equal_var=False)
    return t, p


def rank_gender_features(lm: LoadedModel, sae: SAE, hook: str | None = None,
                         selection: SelectionPrompts | None = None, pairs: str | None = None,
                         alpha: float = 0.05) -> pd.DataFrame:
    """One row per SAE feature, sorted by stereotype strength (``|stereotype_diff|``), with its kind."""
    hook = lm.check_sae(sae, hook)
    selection = selection or SelectionPrompts.load()
    device = next(sae.parameters()).device  # the door returns CPU tensors; the SAE may sit on a GPU
    with torch.inference_mode():
        def codes(texts: list[str]) -> np.ndarray:
            return sae.encode(last_token_acts(lm, hook, texts).to(device)).cpu().numpy()

        female, male = codes(occupation_prefixes(selection, True)), codes(occupation_prefixes(selection, False))
        def_f, def_m = codes(subject_prefixes(selection, True)), codes(subject_prefixes(selection, False))
        pair_file = pairs_path(pairs or "gender_train")
        contrast = feature_tests(pair_activations(lm, sae, hook, read_pairs(pair_file)).feature_deltas, alpha)
        corpus_rate = _corpus_firing_rate(lm, sae, hook)
    contrast = contrast.set_index("feature").sort_index()
    stereo_t, stereo_p = _welch(female, male)
    defin_t, defin_p = _welch(def_f, def_m)
    table = pd.DataFrame({
        "feature": np.arange(sae.d_sae),
        "stereotype_diff": female.mean(0) - male.mean(0),
        "stereotype_t": stereo_t, "stereotype_q": stats.false_discovery_control(stereo_p),
        "female_occupations": female.mean(0), "male_occupations": male.mean(0),
        "definitional_diff": def_f.mean(0) - def_m.mean(0),
        "definitional_t": defin_t, "definitional_q": stats.false_discovery_control(defin_p),
        "pair_delta": contrast["mean_delta"].to_numpy(), "pair_q": contrast["q"].to_numpy(),
    })
    stereo_sig = table.stereotype_q < alpha
    defin_effect = np.maximum(table.definitional_diff.abs(), table.pair_delta.abs())
    defin_sig = (table.definitional_q < alpha) | (table.pair_q < alpha)
    stereo_effect = table.stereotype_diff.abs()
    table["kind"] = np.select(
        [stereo_sig & (defin_effect < stereo_effect / 2), defin_sig & (stereo_effect < defin_effect / 2),
         stereo_sig | defin_sig], ["stereotype", "definitional", "both"], "none")
    fire = np.maximum((def_f > 0).mean(0), (def_m > 0).mean(0))
    level = np.maximum(def_f.mean(0), def_m.mean(0))
    table["definitional_fire"], table["corpus_rate"] = fire, corpus_rate
    table["gate"] = ((fire >= 0.25) & (np.abs(def_f.mean(0) - def_m.mean(0)) > 0.5 * level)
                     & (np.maximum(female.mean(0), male.mean(0)) < 0.1 * level) & (corpus_rate < 0.02))
    order = table.stereotype_diff.abs().sort_values(ascending=False).index
    return table.reindex(order).reset_index(drop=True)


def _corpus_firing_rate(lm: LoadedModel, sae: SAE, hook: str, tokens: int = 2048) -> np.ndarray:
    windows = first_windows(lm.tokenizer, tokens, "train").to(lm.device)
    acts, keep = hook_activations(lm, hook, windows)
    feats = sae.encode(acts[keep].float())
    return (feats > 0).float().mean(0).cpu().numpy()


def gate_features(table: pd.DataFrame) -> list[int]:
    """Features that detect intrinsically gendered words (see the module docstring)."""
    return sorted(int(f) for f in table.feature[table.gate])


def stereotype_features(table: pd.DataFrame, n: int) -> list[int]:
    """The ``n`` strongest features of kind ``stereotype`` (the automatic choice of ``debias``)."""
    chosen = table[table.kind == "stereotype"].head(n)
    return [int(f) for f in chosen.feature]
