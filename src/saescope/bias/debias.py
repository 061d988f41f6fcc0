"""Build a gender-debiasing intervention from SAE features, choosing it on training data only.

Methods (all ``saescope.steering`` interventions, so all act on prompts and generated tokens alike):
- ``erase`` (the default, and the best here): **SAE-gated readout erasure**. Later layers read an
  occupation's stereotyped gender from the occupation token's residual (activation patching: the
  token carries it up to layer ~24, the last position picks it up at layers 24-28). We erase, at one
  layer L, the direction that read-out uses: the mean gradient of log P(she)/P(he) with respect to
  the occupation token's residual over the training occupation prompts, anchored at the corpus
  mean (``SubspaceErasure``). It is *not* erased on tokens that are gendered by definition
  (mother, king, Emma, she): those are detected by the SAE's narrow definitional-gender features
  (``gender_features.gate_features``, a ``FeatureGate``), so real gender information survives.
  Candidates: L in {SAE layer, +2, +4, +6}; ``--features`` gives the gate features;
- ``ablate``: set the strongest stereotype features to 0 (SAE error term kept); strength = how many;
- ``cap``: cap each chosen feature at the level it has on the *other* gender's stereotyped
  occupations (``min(a, level)``): the stereotyped excess goes, the feature's ordinary use stays;
- ``circuit``: ablate the stereotype nodes of the gender-pronoun circuit over the SAE suite, at all
  layers at once (``bias.circuit_debias``); strength = how many nodes;
- ``steer``: add the gender contrast vector (CAA, from the training pairs; or the chosen features'
  decoder directions signed by their gender effect) with the coefficient that brings the mean
  ``p_she`` of the training occupation prompts to 0.5 (found by bisection); strengths are fractions
  of that coefficient. It corrects the overall offset, not the stereotype.

``--features auto`` takes the strongest features of kind ``stereotype`` (``gender_features``), or for
``erase`` the gate features. Automatic choice: every candidate is scored on the selection prompts
(their own occupations, templates and definitional subjects) and on training-split text; the chosen
one removes the most occupation bias while keeping the definitional accuracy >= 95% of the original
and the CE loss within +2%. If no candidate meets both, the one with the smallest CE increase is
used and the selection table says so. No evaluation benchmark is seen before ``bias eval`` runs.

Earlier versions called ``erase`` "project" and ``cap`` "clamp"; both old names are still accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch

from saescope.bias.config import DebiasConfig
from saescope.bias.data import SelectionPrompts
from saescope.bias.gender_features import gate_features, rank_gender_features, stereotype_features
from saescope.bias.scoring import pronoun_ids
from saescope.bias.selection import SelectionScorer
from saescope.corpus import first_windows
from saescope.errors import SaescopeError
from saescope.model.activations import sink_mask
from saescope.model.hooks import capture_with_grad, forward_until, resolve_hook
from saescope.model.likelihood import encode_texts, last_token_logits, pad_id, pad_rows
from saescope.model.loading import LoadedModel
from saescope.precision import MEASURE, precision_record
from saescope.sae.core import SAE
from saescope.steering import FeatureEdit, FeatureGate, FeatureSteering, Intervention, SubspaceErasure, VectorSteering
from saescope.steering.contrast.pairs import pairs_path, read_pairs
from saescope.steering.contrast.stats import pair_activations

FEATURE_COUNTS = (4, 8, 16, 32)
STEER_FRACTIONS = (0.5, 0.75, 1.0)
ERASE_FRACTIONS = (1.0,)


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


def _feature_levels(table: pd.DataFrame, features: list[int]) -> dict[int, float]:
    by_feature = table.set_index("feature")
    return {f: float(min(by_feature.at[f, "female_occupations"], by_feature.at[f, "male_occupations"]))
            for f in features}


def female_direction(lm: LoadedModel, sae: SAE, hook: str, table: pd.DataFrame, features: list[int] | None
                   ) -> torch.Tensor:
    """Female-minus-male direction: CAA over the training pairs, or the signed decoder directions of ``features``."""
    if features:
        signs = table.set_index("feature").loc[features, "pair_delta"].apply(lambda d: 1.0 if d >= 0 else -1.0)
        vector = (torch.tensor(signs.to_numpy(), dtype=torch.float32) @ sae.decoder_directions()[features].cpu())
    else:
        pairs = read_pairs(pairs_path("gender_train"))
        vector = pair_activations(lm, sae, hook, pairs).deltas.mean(0)
    return vector / vector.norm()


def feature_intervention(sae: SAE, method: str, features: list[int], table: pd.DataFrame, hook: str) -> Intervention:
    """``ablate`` (set to 0) or ``cap`` (at the other gender's occupation level) the given features."""
    if not features:
        raise SaescopeError("no features to intervene on")
    if method == "ablate":
        return FeatureSteering(sae, [FeatureEdit(f, "ablate", 0.0) for f in features], hook)
    levels = _feature_levels(table, features)
    return FeatureSteering(sae, [FeatureEdit(f, "cap", levels[f]) for f in features], hook)


def readout_directions(lm: LoadedModel, hooks: list[str], selection: SelectionPrompts,
                       batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Per hook point, the unit mean gradient of log P(she)/P(he) with respect to the occupation
    token's residual over the training occupation prompts: the direction later layers read the
    stereotype from. One batched backward pass gives it at every hook point."""
    she, he = pronoun_ids(lm)
    pairs = [(t.split("{occupation}")[0] + o, t.format(occupation=o)) for t in selection.templates
             for o in selection.female_occupations + selection.male_occupations]
    rows = encode_texts(lm, [prompt for _, prompt in pairs])
    positions = [len(ids) - 1 for ids in encode_texts(lm, [prefix for prefix, _ in pairs])]
    totals = {hook: torch.zeros(lm.d_model) for hook in hooks}
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_rows(rows[start:start + batch_size], pad_id(lm), lm.device)
        where = torch.tensor(positions[start:start + batch_size], device=lm.device)
        with capture_with_grad(lm.model, hooks) as acts:
            logp = last_token_logits(lm, ids, mask).log_softmax(-1)
            (logp[:, she].logsumexp(-1) - logp[:, he].logsumexp(-1)).sum().backward()
        for hook in hooks:
            totals[hook] += acts[hook].grad[torch.arange(len(ids), device=lm.device), where].sum(0).float().cpu()
    return {hook: total / total.norm() for hook, total in totals.items()}


def readout_direction(lm: LoadedModel, hook: str, selection: SelectionPrompts) -> torch.Tensor:
    """``readout_directions`` at one hook point."""
    return readout_directions(lm, [hook], selection)[hook]


def _project_layers(lm: LoadedModel, hook: str, layers: list[int] | None = None) -> list[str]:
    """Candidate erasure hook points: ``layers``, or the SAE's layer and a few after it (the gate,
    at the SAE's layer, must run first)."""
    point = resolve_hook(lm.model, hook)
    if point.kind != "resid_post" or point.layer is None:
        return [hook]
    chosen = layers if layers is not None else range(point.layer, min(point.layer + 7, lm.n_layers), 2)
    early = [layer for layer in chosen if layer < point.layer]
    if early:
        raise SaescopeError(f"erase layers {early} come before the SAE's layer {point.layer}: the gate must run first")
    return [resolve_hook(lm.model, f"blocks.{layer}.hook_resid_post").name for layer in chosen]


def _centering_coefficient(scorer: SelectionScorer, make: Callable[[float], Intervention],
                           limit: float = 64.0) -> float:
    """Bisection for the coefficient that brings the selection prompts' mean p_she to 0.5."""
    base = scorer.base["mean_p_she"]
    sign = -1.0 if base > 0.5 else 1.0
    low, high = 0.0, limit
    for _ in range(10):
        mid = (low + high) / 2
        mean = scorer.score(make(sign * mid), full=False)["mean_p_she"]
        if (mean - 0.5) * (base - 0.5) > 0:
            low = mid
        else:
            high = mid
    return sign * (low + high) / 2


def _corpus_means(lm: LoadedModel, hooks: list[str], tokens: int = 8192) -> dict[str, torch.Tensor]:
    """The mean residual (attention sinks excluded) at each hook point over training text, one pass."""
    windows = first_windows(lm.tokenizer, tokens, "train").to(lm.device)
    totals, counts = {h: torch.zeros(lm.d_model) for h in hooks}, dict.fromkeys(hooks, 0)
    with torch.inference_mode():
        for start in range(0, len(windows), 16):
            captured = forward_until(lm.model, hooks, windows[start:start + 16])
            for hook, acts in captured.items():
                kept = acts[~sink_mask(acts)].float()
                totals[hook] += kept.sum(0).cpu()
                counts[hook] += len(kept)
    return {hook: totals[hook] / counts[hook] for hook in hooks}


Candidate = tuple[str, list[int], Intervention]  # (label, features used, intervention)


def _feature_candidates(sae: SAE, method: str, features: str | list[int], strengths: list[float] | None,
                        hook: str, table: pd.DataFrame) -> list[Candidate]:
    chosen = stereotype_features(table, max(FEATURE_COUNTS)) if features == "auto" else list(features)
    if not chosen:
        raise SaescopeError("no stereotype feature found on the selection prompts: give the features explicitly")
    counts = sorted({min(int(n), len(chosen)) for n in (strengths or FEATURE_COUNTS)})
    return [(f"{n} features", chosen[:n], feature_intervention(sae, method, chosen[:n], table, hook))
            for n in counts if n > 0]


def _steer_candidates(lm: LoadedModel, sae: SAE, features: str | list[int], strengths: list[float] | None,
                      hook: str, table: pd.DataFrame, scorer: SelectionScorer) -> list[Candidate]:
    chosen = [] if features == "auto" else list(features)
    vector = female_direction(lm, sae, hook, table, chosen or None)
    full = _centering_coefficient(scorer, lambda c: VectorSteering(hook, vector, c))
    return [(f"coefficient {full * f:.3g}", chosen, VectorSteering(hook, vector, full * f, name="gender-centering"))
            for f in (strengths or STEER_FRACTIONS)]


def _erase_candidates(lm: LoadedModel, sae: SAE, features: str | list[int], strengths: list[float] | None,
                      hook: str, table: pd.DataFrame, selection: SelectionPrompts,
                      layers: list[int] | None = None) -> list[Candidate]:
    gate_ids = gate_features(table) if features == "auto" else list(features)
    if not gate_ids:
        raise SaescopeError("no definitional-gender gate feature found on the selection prompts: "
                            "give the features explicitly")
    gate = FeatureGate(sae, gate_ids, hook)
    layers = _project_layers(lm, hook, layers)
    directions, means = readout_directions(lm, layers, selection), _corpus_means(lm, layers)
    return [(f"{layer} x{fraction:g}", gate_ids, SubspaceErasure(layer, directions[layer], means[layer], fraction,
                                                                 name="gender-readout", gate=gate))
            for layer in layers for fraction in strengths or ERASE_FRACTIONS]


def plan_debias(lm: LoadedModel, sae: SAE, config: DebiasConfig | str | None = None, *,
                selection: SelectionPrompts | None = None, **fields: Any) -> DebiasPlan:
    """Rank the gender features, build every candidate, score them on training data only, choose one.

    ``config`` (or a method name, or keyword ``fields`` of ``DebiasConfig``) says how. Everything is
    computed on ``lm`` in its precision; give it a float32 model (``load_model(dtype="float32")``, what
    ``saescope debias`` loads by default): the gate features sit at thresholds, and a bfloat16 model
    chooses another gate and intervention (README, "Precision"). Example::

        plan = plan_debias(lm, sae, "erase")
        plan.candidate, plan.candidates[["candidate", "dev_reduction", "chosen"]]
    """
    config = DebiasConfig(method=config) if isinstance(config, str) else config or DebiasConfig()
    if isinstance(fields.get("features"), list):
        fields["features"] = ",".join(map(str, fields["features"]))
    if isinstance(fields.get("strengths"), list):
        fields["strengths"] = ",".join(map(str, fields["strengths"]))
    config = replace(config, **fields)
    hook = lm.check_sae(sae, config.hook)
    selection = selection or SelectionPrompts.load()
    table = rank_gender_features(lm, sae, hook, selection)
    features = config.feature_ids
    if features != "auto":
        features = [sae.check_feature(f) for f in features]
    scorer = SelectionScorer(lm, selection)
    if config.method in ("ablate", "cap"):
        candidates = _feature_candidates(sae, config.method, features, config.grid, hook, table)
    elif config.method == "steer":
        candidates = _steer_candidates(lm, sae, features, config.grid, hook, table, scorer)
    elif config.method == "circuit":
        from saescope.bias.circuit_debias import circuit_candidates
        from saescope.sae.suite import load_suite

        candidates = circuit_candidates(lm, load_suite(config.suite, device=str(lm.device)), selection, config.grid)
    else:
        candidates = _erase_candidates(lm, sae, features, config.grid, hook, table, selection, config.layer_ids)
    frame = pd.DataFrame([{"candidate": label, **scorer.row(intervention)} for label, _, intervention in candidates])
    admissible = frame[frame.admissible]
    pick = int((admissible.sort_values("dev_reduction", ascending=False) if len(admissible)
                else frame.sort_values("ce_increase")).index[0])
    frame["chosen"] = frame.index == pick
    for _, _, intervention in candidates:
        intervention.model_name = lm.name
    label, used, intervention = candidates[pick]
    return DebiasPlan(config.method, used, label, intervention, frame, table, {c[0]: c[2] for c in candidates},
                      precision_record(lm.dtype, MEASURE))
