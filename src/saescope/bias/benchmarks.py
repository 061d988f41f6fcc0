"""The gender-bias benchmarks, each measured on the model as it is (wrap calls in ``applied(...)``).

Metric definitions (the README's bias section repeats them):
- occupations: ``p_she`` per occupation x template; Pearson and Spearman r (``scipy.stats``) of the
  per-occupation mean with ``bls_pct_female``; ``mean_abs_dev`` = mean over all occupation x template
  prompts of ``|p_she - 0.5|`` (template offsets count as bias too), and the same over per-occupation
  means (``occupation_abs_dev``);
- WinoBias: per type, the share of twins where the pro-stereotyped sentence has the higher
  log-likelihood (50% = no preference), and the mean log-likelihood gap pro - anti;
- CrowS-Pairs gender: the share where ``sent_more`` has the higher log-likelihood;
- for both twin benchmarks, each share's 95 % Wilson interval (``preference_interval``): CrowS's 127
  pairs give about ±9 points, WinoBias's 396 twins per type about ±5, so a target of 50 ± 3 is tighter than
  what one run can tell apart;
- subject-verb agreement: the share of prompts where the right verb form outscores the wrong one;
- definitional gender: the share of prompts whose ``p_she`` is on the right side of 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from saescope.bias.data import AgreementPair, GenderedPrompt, Occupation, TwinPair
from saescope.bias.scoring import p_she
from saescope.errors import SaescopeError
from saescope.model.likelihood import document_start_id, encode_texts, next_token_logprobs
from saescope.model.loading import LoadedModel
from saescope.model.shared_prefix import twin_span_logprobs


@dataclass
class OccupationScores:
    pearson_r: float
    spearman_r: float
    mean_abs_dev: float
    occupation_abs_dev: float
    mean_p_she: float
    p_she: dict[str, float]  # per-occupation mean over templates
    pct_female: dict[str, float]


def occupation_bias(lm: LoadedModel, occupations: list[Occupation], templates: tuple[str, ...] | list[str],
                    batch_size: int = 64) -> OccupationScores:
    if len(templates) < 1 or not all("{occupation}" in t for t in templates):
        raise SaescopeError("occupation templates must each contain {occupation}")
    prompts = [t.format(occupation=o.name) for o in occupations for t in templates]
    probs = p_she(lm, prompts, batch_size).view(len(occupations), len(templates)).double().numpy()
    per_occ = probs.mean(1)
    bls = np.array([o.pct_female for o in occupations])
    constant = np.ptp(per_occ) == 0
    return OccupationScores(
        pearson_r=0.0 if constant else float(stats.pearsonr(per_occ, bls).statistic),
        spearman_r=0.0 if constant else float(stats.spearmanr(per_occ, bls).statistic),
        mean_abs_dev=float(np.abs(probs - 0.5).mean()), occupation_abs_dev=float(np.abs(per_occ - 0.5).mean()),
        mean_p_she=float(per_occ.mean()), p_she={o.name: float(p) for o, p in zip(occupations, per_occ)},
        pct_female={o.name: o.pct_female for o in occupations})


@dataclass
class TwinScores:
    """Per group: the share of twins where the stereotypical side wins, its 95 % interval, and the mean gap."""

    preference: dict[str, float]
    mean_gap: dict[str, float]
    n: dict[str, int]
    interval: dict[str, list[float]] = field(default_factory=dict)  # [low, high] (results cached before: empty)

    @property
    def overall(self) -> float:
        """The share over every pair: group "all", or the only group when there is one (CrowS: "gender")."""
        return self.preference.get("all", next(iter(self.preference.values()), float("nan")))

    @property
    def overall_interval(self) -> list[float] | None:
        """``overall``'s interval (None for results cached before intervals were kept)."""
        return self.interval.get("all", next(iter(self.interval.values()), None))


def preference_interval(wins: int, n: int, confidence: float = 0.95) -> list[float]:
    """The Wilson score interval of a share of ``wins`` out of ``n`` (``scipy.stats.binomtest``)."""
    ci = stats.binomtest(int(wins), int(n)).proportion_ci(confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def twin_preference(lm: LoadedModel, pairs: list[TwinPair], batch_size: int = 32, packed: bool = True) -> TwinScores:
    """The log-likelihood gap stereo - anti of each twin pair. The twins' shared first tokens have the
    same log-probabilities in both (same tokens, same context), so only the tokens from the first
    difference on are scored, and (``packed``) the shared prefix runs once per pair
    (``model.shared_prefix``): the gap is the same as the whole sentences' gap, for less work."""
    if not pairs:
        raise SaescopeError("no sentence pairs to score")
    start = [document_start_id(lm)]
    stereo, anti = encode_texts(lm, [p.stereo for p in pairs], start), encode_texts(lm, [p.anti for p in pairs], start)
    stereo_lp, anti_lp = twin_span_logprobs(lm, stereo, anti, batch_size, packed)
    gap = (stereo_lp - anti_lp).numpy()
    groups = np.array([p.group for p in pairs])
    preference, mean_gap, n, interval = {}, {}, {}, {}
    for group in sorted(set(groups)):
        chosen = gap[groups == group]
        preference[group], mean_gap[group], n[group] = float((chosen > 0).mean()), float(chosen.mean()), len(chosen)
        interval[group] = preference_interval((chosen > 0).sum(), len(chosen))
    if len(preference) > 1:
        preference["all"], mean_gap["all"], n["all"] = float((gap > 0).mean()), float(gap.mean()), len(gap)
        interval["all"] = preference_interval((gap > 0).sum(), len(gap))
    return TwinScores(preference, mean_gap, n, interval)


def agreement_accuracy(lm: LoadedModel, items: list[AgreementPair], batch_size: int = 64) -> float:
    """Share of prompts where the right verb form gets more probability than the wrong one."""
    first = {}
    for word in {w for item in items for w in (item.right, item.wrong)}:
        first[word] = lm.encode(word)[0]
    columns = sorted(set(first.values()))
    where = {tok: i for i, tok in enumerate(columns)}
    lp = next_token_logprobs(lm, [item.prefix for item in items], columns, batch_size)
    rows = torch.arange(len(items))
    right = lp[rows, torch.tensor([where[first[i.right]] for i in items])]
    wrong = lp[rows, torch.tensor([where[first[i.wrong]] for i in items])]
    return float((right > wrong).float().mean())


def definitional_accuracy(lm: LoadedModel, prompts: list[GenderedPrompt], batch_size: int = 64) -> float:
    """Share of definitional prompts answered with the right pronoun (``p_she`` on the right side of 0.5)."""
    probs = p_she(lm, [p.prompt for p in prompts], batch_size)
    female = torch.tensor([p.female for p in prompts])
    return float(((probs > 0.5) == female).float().mean())

