"""``plan_debias``: rank the gender features, build a method's candidates, score them on training data
only, choose one.

Automatic choice: every candidate is scored on the selection prompts (their own occupations, templates
and definitional subjects) and on training-split text; the chosen one removes the most occupation bias
while keeping the definitional accuracy >= 95% of the original and the CE loss within +2%. If no
candidate meets both, the one with the smallest CE increase is used and the selection table says so.
No evaluation benchmark is seen before ``bias eval`` runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from saescope.bias.data import SelectionPrompts
from saescope.bias.debias.config import DebiasConfig
from saescope.bias.debias.registry import MethodContext, debias_method
from saescope.bias.debias.selection import SelectionScorer
from saescope.bias.gender_features import rank_gender_features
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.precision import MEASURE, precision_record
from saescope.sae.core import SAE
from saescope.steering import Intervention


def pareto_front(frame: pd.DataFrame) -> pd.Series:
    """True for the candidates no other one beats on every axis: more bias cut (``dev_reduction``), no
    more CE increase, no less definitional accuracy (and strictly better on one)."""
    axes = frame[["dev_reduction", "ce_increase", "definitional_ratio"]].to_numpy() * [1, -1, 1]  # larger is better
    dominated = [any((other >= row).all() and (other > row).any() for other in axes) for row in axes]
    return ~pd.Series(dominated, index=frame.index)


def _table(candidates: list, scorer: SelectionScorer, method: str, timings: dict[str, float]) -> pd.DataFrame:
    """One row per candidate: its method, its scores on training data, the Pareto front, build seconds."""
    rows = []
    for label, _, intervention in candidates:
        own = label.split(": ", 1)[0] if method == "auto" else method
        rows.append({"candidate": label, "method": own, **scorer.row(intervention)})
    frame = pd.DataFrame(rows)
    frame["pareto"] = pareto_front(frame)
    frame["build_seconds"] = [round(timings[m], 1) for m in frame.method]
    return frame


@dataclass
class DebiasPlan:
    """The chosen intervention, what it was built from, and the selection table behind the choice."""

    method: str
    features: list[int]
    candidate: str  # the chosen candidate's label (strength, layer)
    intervention: Intervention
    candidates: pd.DataFrame = field(repr=False)
    feature_table: pd.DataFrame = field(repr=False)
    by_label: dict[str, Intervention] = field(default_factory=dict, repr=False)  # every candidate
    precision: dict[str, str] = field(default_factory=dict)  # the dtype it was chosen in, and the rule
    twins: dict[str, dict[str, float]] = field(default_factory=dict)  # the plain model's training-twin preferences


def plan_debias(lm: LoadedModel, sae: SAE, config: DebiasConfig | str | None = None, *,
                selection: SelectionPrompts | None = None, table: pd.DataFrame | None = None,
                **fields: Any) -> DebiasPlan:
    """Rank the gender features, build every candidate, score them on training data only, choose one.

    ``config`` (or a method name, or keyword ``fields`` of ``DebiasConfig``) says how. Everything is
    computed on ``lm`` in its precision; give it a float32 model (``load_model(dtype="float32")``, what
    ``saescope bias debias`` loads by default): the gate features sit at thresholds, and a bfloat16 model
    chooses another gate and intervention (docs/results/precision.md). Example::

        plan = plan_debias(lm, sae, "erase", layers=[12, 14])
        plan.candidate, plan.candidates[["candidate", "dev_reduction", "chosen"]]

    ``table`` reuses a ``rank_gender_features(lm, sae, hook, selection)`` table (several plans, one ranking).
    """
    config = DebiasConfig(method=config) if isinstance(config, str) else config or DebiasConfig()
    config = replace(config, **fields)
    method = debias_method(config.method)
    hook = lm.check_sae(sae, config.hook)
    selection = selection or SelectionPrompts.load()
    table = rank_gender_features(lm, sae, hook, selection) if table is None else table
    features = config.features if config.features == "auto" else [sae.check_feature(f) for f in config.features]
    scorer = SelectionScorer(lm, selection)
    start, context = time.perf_counter(), MethodContext(lm, sae, hook, config, table, selection, scorer, features)
    candidates = method(context)
    if not candidates:
        raise SaescopeError(f"debias method {config.method!r} built no candidate")
    context.timings.setdefault(config.method, time.perf_counter() - start)
    frame = _table(candidates, scorer, config.method, context.timings)
    admissible = frame[frame.admissible]
    pick = int((admissible.sort_values("dev_reduction", ascending=False) if len(admissible)
                else frame.sort_values("ce_increase")).index[0])
    frame["chosen"] = frame.index == pick
    twins = {"plain": scorer.twin_scores(None)}
    for index in frame.index[frame.pareto]:
        for name, value in scorer.twin_scores(candidates[index][2]).items():
            frame.loc[index, name] = value
    for _, _, intervention in candidates:
        intervention.model_name = lm.name
    label, used, intervention = candidates[pick]
    return DebiasPlan(config.method, used, label, intervention, frame, table, {c[0]: c[2] for c in candidates},
                      precision_record(lm.dtype, MEASURE), twins)
