"""Scoring debias candidates on training data only: the selection prompts' occupation bias and
definitional accuracy, and the CE loss on training-split text. Never an evaluation benchmark.

``twin_scores`` gives the share of the training twins (``bias.training_pairs``) where the stereotyped side
wins: ``coref_preference`` (WinoBias type 1's shape) and ``pair_preference`` (CrowS-Pairs' shape); 0.5
is no preference. ``plan_debias`` reports them for the plain model and the Pareto-front candidates (about
9 s a candidate on 2 cores, so not for every one). They are reported, not used by the rule: the
candidates differ on them by about the twins' noise (±3 points), except the instruction prompt, which is
worse on every other figure (docs/results/figures.md, "Training twins").
"""

from __future__ import annotations

import torch

from saescope.bias.benchmarks import twin_preference
from saescope.bias.data import SelectionPrompts
from saescope.bias.scoring import p_she
from saescope.bias.training_pairs import coreference_pairs, stereotype_pairs
from saescope.corpus import first_windows
from saescope.model.hooks import Applicable, applied
from saescope.model.likelihood import ce_and_kl
from saescope.model.loading import LoadedModel

MAX_CE_INCREASE = 0.02
MIN_DEFINITIONAL_RATIO = 0.95


class SelectionScorer:
    """Bias, definitional accuracy and CE of a candidate on the selection prompts and training text."""

    def __init__(self, lm: LoadedModel, selection: SelectionPrompts, ce_tokens: int = 2048) -> None:
        self.lm, self.selection = lm, selection
        pairs = selection.occupation_prompts()
        self.prompts = [p for p, _ in pairs]
        self.female = torch.tensor([f for _, f in pairs])
        self.def_prompts = [p.prompt for p in selection.definitional]
        self.def_female = torch.tensor([p.female for p in selection.definitional])
        self.twins = {"coref_preference": coreference_pairs(selection), "pair_preference": stereotype_pairs(selection)}
        self.windows = first_windows(lm.tokenizer, ce_tokens, "train").to(lm.device)
        self.base = self.score(None)

    @torch.inference_mode()
    def score(self, intervention: Applicable | None, full: bool = True) -> dict[str, float]:
        with applied(intervention, self.lm):
            probs = p_she(self.lm, self.prompts)
            if not full:
                return {"mean_p_she": float(probs.mean())}
            definitional = p_she(self.lm, self.def_prompts)
            ce_loss, _, _ = ce_and_kl(self.lm, self.windows)
        return {"mean_abs_dev": float((probs - 0.5).abs().mean()), "mean_p_she": float(probs.mean()),
                "stereotype_gap": float(probs[self.female].mean() - probs[~self.female].mean()),
                "definitional_accuracy": float(((definitional > 0.5) == self.def_female).float().mean()),
                "ce_loss": ce_loss}

    @torch.inference_mode()
    def twin_scores(self, intervention: Applicable | None) -> dict[str, float]:
        """``coref_preference`` and ``pair_preference`` (module docstring), for the twins the selection has."""
        with applied(intervention, self.lm):
            return {name: twin_preference(self.lm, pairs).overall for name, pairs in self.twins.items() if pairs}

    def row(self, intervention: Applicable) -> dict[str, float | bool]:
        s, b = self.score(intervention), self.base
        row = {**s,
               "dev_reduction": 1 - s["mean_abs_dev"] / b["mean_abs_dev"],
               "definitional_ratio": s["definitional_accuracy"] / max(b["definitional_accuracy"], 1e-12),
               "ce_increase": s["ce_loss"] / b["ce_loss"] - 1}
        row["admissible"] = row["definitional_ratio"] >= MIN_DEFINITIONAL_RATIO and row["ce_increase"] <= MAX_CE_INCREASE
        return row

