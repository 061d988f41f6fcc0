"""Build a gender-debiasing intervention from SAE features, choosing it on training data only.

Methods (all through ``saescope.interventions``, so all act on prompts and generated tokens alike):
- ``project`` (the default, and the best here): **SAE-gated readout erasure**. Later layers read an
  occupation's stereotyped gender from the occupation token's residual (activation patching: the
  token carries it up to layer ~24, the last position picks it up at layers 24-28). We erase, at one
  layer L, the direction that read-out uses: the mean gradient of log P(she)/P(he) with respect to
  the occupation token's residual over the training occupation prompts, anchored at the corpus
  mean (``SubspaceErasure``). It is *not* erased on tokens that are gendered by definition
  (mother, king, Emma, she): those are detected by the SAE's narrow definitional-gender features
  (``gender_features.gate_features``, a ``FeatureGate``), so real gender information survives.
  Candidates: L in {SAE layer, +2, +4, +6}; ``--features`` gives the gate features;
- ``ablate``: set the strongest stereotype features to 0 (SAE error term kept); strength = how many;
- ``clamp``: cap each chosen feature at the level it has on the *other* gender's stereotyped
  occupations (``min(a, level)``): the stereotyped excess goes, the feature's ordinary use stays;
- ``steer``: add the gender contrast vector (CAA, from the training pairs; or the chosen features'
  decoder directions signed by their gender effect) with the coefficient that brings the mean
  ``p_she`` of the training occupation prompts to 0.5 (found by bisection); strengths are fractions
  of that coefficient. It corrects the overall offset, not the stereotype.

``--features auto`` takes the strongest features of kind ``stereotype`` (``gender_features``), or for
``project`` the gate features. Automatic choice: every candidate is scored on the selection prompts
(their own occupations, templates and definitional subjects) and on training-split text; the chosen
one removes the most occupation bias while keeping the definitional accuracy >= 95% of the original
and the CE loss within +2%. If no candidate meets both, the one with the smallest CE increase is
used and the selection table says so. No evaluation benchmark is seen before ``bias eval`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files

import pandas as pd
import torch

from saescope.bias.data import SelectionPrompts
from saescope.bias.gender_features import gate_features, rank_gender_features, stereotype_features
from saescope.bias.scoring import p_she
from saescope.contrast import pair_activations, read_pairs
from saescope.corpus import first_windows
from saescope.errors import SaescopeError
from saescope.feature_run import FeatureRun
from saescope.interventions import (FeatureEdit, FeatureGate, FeatureSteering, Intervention, SubspaceErasure,
                                    VectorSteering, applied)
from saescope.lm_metrics import next_token_logprobs_of, summed_ce
from saescope.models import LoadedModel
from saescope.sae import SAE

METHODS = ("ablate", "clamp", "project", "steer")
FEATURE_COUNTS = (4, 8, 16, 32)
STEER_FRACTIONS = (0.5, 0.75, 1.0)
PROJECT_FRACTIONS = (1.0,)
MAX_CE_INCREASE = 0.02
MIN_DEFINITIONAL_RATIO = 0.95


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


class _SelectionScorer:
    """Bias, definitional accuracy and CE of a candidate on the selection prompts and training text."""

    def __init__(self, lm: LoadedModel, selection: SelectionPrompts, ce_tokens: int = 2048) -> None:
        self.lm, self.selection = lm, selection
        pairs = selection.occupation_prompts()
        self.prompts = [p for p, _ in pairs]
        self.female = torch.tensor([f for _, f in pairs])
        self.def_prompts = [p.prompt for p in selection.definitional]
        self.def_female = torch.tensor([p.female for p in selection.definitional])
        self.windows = first_windows(lm.tokenizer, ce_tokens, "train").to(lm.device)
        self.base = self.score(None)

    @torch.inference_mode()
    def score(self, intervention: Intervention | None, full: bool = True) -> dict[str, float]:
        with applied(intervention, self.lm):
            probs = p_she(self.lm, self.prompts)
            if not full:
                return {"mean_p_she": float(probs.mean())}
            definitional = p_she(self.lm, self.def_prompts)
            logp = next_token_logprobs_of(self.lm.model(input_ids=self.windows).logits)
        return {"mean_abs_dev": float((probs - 0.5).abs().mean()), "mean_p_she": float(probs.mean()),
                "stereotype_gap": float(probs[self.female].mean() - probs[~self.female].mean()),
                "definitional_accuracy": float(((definitional > 0.5) == self.def_female).float().mean()),
                "ce_loss": summed_ce(logp, self.windows) / self.windows[:, 1:].numel()}

    def row(self, intervention: Intervention) -> dict[str, float | bool]:
        s, b = self.score(intervention), self.base
        row = {**s,
               "dev_reduction": 1 - s["mean_abs_dev"] / b["mean_abs_dev"],
               "definitional_ratio": s["definitional_accuracy"] / max(b["definitional_accuracy"], 1e-12),
               "ce_increase": s["ce_loss"] / b["ce_loss"] - 1}
        row["admissible"] = row["definitional_ratio"] >= MIN_DEFINITIONAL_RATIO and row["ce_increase"] <= MAX_CE_INCREASE
        return row


def _feature_levels(table: pd.DataFrame, features: list[int]) -> dict[int, float]:
    by_feature = table.set_index("feature")
    return {f: float(min(by_feature.at[f, "female_occupations"], by_feature.at[f, "male_occupations"]))
            for f in features}


def _gender_vector(lm: LoadedModel, sae: SAE, hook: str, table: pd.DataFrame, features: list[int] | None
                   ) -> torch.Tensor:
    """Female-minus-male direction: CAA over the training pairs, or the signed decoder directions of ``features``."""
    if features:
        signs = table.set_index("feature").loc[features, "pair_delta"].apply(lambda d: 1.0 if d >= 0 else -1.0)
        vector = (torch.tensor(signs.to_numpy(), dtype=torch.float32) @ sae.decoder_directions()[features].cpu())
    else:
        pairs = read_pairs(str(files("saescope") / "data" / "pairs" / "gender_train.jsonl"))
        vector = pair_activations(lm, sae, hook, pairs).deltas.mean(0)
    return vector / vector.norm()


def feature_intervention(sae: SAE, method: str, features: list[int], table: pd.DataFrame, hook: str) -> Intervention:
    """``ablate`` (set to 0) or ``clamp`` (cap at the other gender's occupation level) the given features."""
    if not features:
        raise SaescopeError("no features to intervene on")
    if method == "ablate":
        return FeatureSteering(sae, [FeatureEdit(f, "ablate", 0.0) for f in features], hook)
    levels = _feature_levels(table, features)
    return FeatureSteering(sae, [FeatureEdit(f, "cap", levels[f]) for f in features], hook)


def readout_direction(lm: LoadedModel, hook: str, selection: SelectionPrompts) -> torch.Tensor:
    """Unit mean gradient of log P(she)/P(he) with respect to the occupation token's residual at ``hook``,
    over the training occupation prompts: the direction later layers read the stereotype from."""
    from saescope.bias.scoring import pronoun_ids
    from saescope.hooks import intervene

    she, he = pronoun_ids(lm)
    total = torch.zeros(lm.d_model)
    prompts = [(t.split("{occupation}")[0] + o, t.format(occupation=o)) for t in selection.templates
               for o in selection.female_occupations + selection.male_occupations]
    for prefix, prompt in prompts:
        position = len(lm.tokenizer(prefix, add_special_tokens=False)["input_ids"]) - 1
        ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(lm.device)
        held: dict[str, torch.Tensor] = {}

        def keep_grad(acts: torch.Tensor) -> torch.Tensor:
            held["acts"] = acts.detach().requires_grad_(True)
            return held["acts"]

        with torch.enable_grad(), intervene(lm.model, {hook: keep_grad}):
            logp = lm.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
            (logp[she].logsumexp(0) - logp[he].logsumexp(0)).backward()
        total += held["acts"].grad[0, position].float().cpu()
    return total / total.norm()


def _project_layers(lm: LoadedModel, hook: str) -> list[str]:
    """Candidate erasure hook points: the SAE's layer and a few after it (the gate must run first)."""
    from saescope.hooks import resolve_hook

    point = resolve_hook(lm.model, hook)
    if point.kind != "resid_post" or point.layer is None:
        return [hook]
    return [f"blocks.{layer}.hook_resid_post" for layer in range(point.layer, min(point.layer + 7, lm.n_layers), 2)]


def _centering_coefficient(scorer: _SelectionScorer, make: Callable[[float], Intervention],
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


def _corpus_mean(lm: LoadedModel, hook: str, tokens: int = 8192) -> torch.Tensor:
    from saescope.activations import sink_mask
    from saescope.hooks import forward_until

    windows = first_windows(lm.tokenizer, tokens, "train").to(lm.device)
    total, count = torch.zeros(lm.d_model), 0
    with torch.inference_mode():
        for start in range(0, len(windows), 16):
            acts = forward_until(lm.model, [hook], windows[start:start + 16])[hook].float()
            kept = acts[~sink_mask(acts)]
            total += kept.sum(0).cpu()
            count += len(kept)
    return total / count


def _candidates(lm: LoadedModel, sae: SAE, method: str, features: str | list[int], strengths: list[float] | None,
                hook: str, table: pd.DataFrame, selection: SelectionPrompts, scorer: _SelectionScorer
                ) -> list[tuple[str, list[int], Intervention]]:
    """``(label, features used, intervention)`` for every candidate of ``method``."""
    if method in ("ablate", "clamp"):
        chosen = stereotype_features(table, max(FEATURE_COUNTS)) if features == "auto" else list(features)
        if not chosen:
            raise SaescopeError("no stereotype feature found on the selection prompts: pass --features")
        counts = sorted({min(int(n), len(chosen)) for n in (strengths or FEATURE_COUNTS)})
        return [(f"{n} features", chosen[:n], feature_intervention(sae, method, chosen[:n], table, hook))
                for n in counts if n > 0]
    if method == "steer":
        chosen = [] if features == "auto" else list(features)
        vector = _gender_vector(lm, sae, hook, table, chosen or None)
        full = _centering_coefficient(scorer, lambda c: VectorSteering(hook, vector, c))
        return [(f"coefficient {full * f:.3g}", chosen, VectorSteering(hook, vector, full * f, name="gender-centering"))
                for f in (strengths or STEER_FRACTIONS)]
    gate_ids = gate_features(table) if features == "auto" else list(features)
    if not gate_ids:
        raise SaescopeError("no definitional-gender gate feature found on the selection prompts: pass --features")
    gate = FeatureGate(sae, gate_ids, hook)
    out = []
    for layer_hook in _project_layers(lm, hook):
        direction = readout_direction(lm, layer_hook, selection)
        mean = _corpus_mean(lm, layer_hook)
        for fraction in strengths or PROJECT_FRACTIONS:
            out.append((f"{layer_hook} x{fraction:g}", gate_ids,
                        SubspaceErasure(layer_hook, direction, mean, fraction, name="gender-readout", gate=gate)))
    return out


def plan_debias(lm: LoadedModel, sae: SAE, method: str = "project", features: str | list[int] = "auto",
                strengths: list[float] | None = None, hook: str | None = None,
                selection: SelectionPrompts | None = None) -> DebiasPlan:
    """Rank the gender features, build every candidate, score them on training data only, choose one.

    ``strengths``: feature counts (ablate, clamp), fractions of the centering coefficient (steer) or
    erasure fractions (project); ``None`` uses the built-in grid.
    """
    if method not in METHODS:
        raise SaescopeError(f"unknown debias method {method!r}: use one of {', '.join(METHODS)}")
    hook = lm.check_sae(sae, hook)
    selection = selection or SelectionPrompts.load()
    table = rank_gender_features(lm, sae, hook, selection)
    if features != "auto":
        features = [sae.check_feature(int(f)) for f in features]
    scorer = _SelectionScorer(lm, selection)
    candidates = _candidates(lm, sae, method, features, strengths, hook, table, selection, scorer)
    frame = pd.DataFrame([{"candidate": label, **scorer.row(intervention)} for label, _, intervention in candidates])
    admissible = frame[frame.admissible]
    pick = int((admissible.sort_values("dev_reduction", ascending=False) if len(admissible)
                else frame.sort_values("ce_increase")).index[0])
    frame["chosen"] = frame.index == pick
    for _, _, intervention in candidates:
        intervention.model_name = lm.name
    label, used, intervention = candidates[pick]
    return DebiasPlan(method, used, label, intervention, frame, table, {c[0]: c[2] for c in candidates})


def features_summary(lm: LoadedModel, sae: SAE, table: pd.DataFrame, features: list[int],
                     run: FeatureRun | None = None, n_tokens: int = 6) -> pd.DataFrame:
    """The chosen features with their gender statistics, promoted tokens and (given a RUN) top tokens."""
    from saescope.logit_effects import logit_effects

    rows = table.set_index("feature").loc[features].reset_index()
    columns = ["feature", "kind", "stereotype_diff", "stereotype_q", "definitional_diff", "pair_delta"]
    rows = rows[columns].copy()
    if features:
        _, up_ids, _, _ = logit_effects(lm, sae, n=n_tokens, features=features)
        rows["promotes"] = [" ".join(repr(lm.tokenizer.decode([int(t)])) for t in ids) for ids in up_ids]
    if run is not None:
        run.check_sae(sae)
        stats = run.stats.set_index("feature")
        rows["top_tokens"] = [" ".join(repr(t) for t in list(stats.at[f, "top_tokens"])[:n_tokens]) for f in features]
        rows["log10_density"] = [float(stats.at[f, "log10_density"]) for f in features]
    return rows
