"""Steering sweeps: one feature, several coefficients, measured for concept, fluency and diversity.

Per coefficient, over all prompts x samples:
- ``concept_activation``: the feature's mean activation over the generated tokens, read by the
  *unsteered* model + SAE (does the text itself carry the concept?);
- ``concept_similarity``: mean cosine between each text's sentence embedding and ``description``;
- ``perplexity``: of the generated tokens given the prompt, under the unsteered model (fluency);
- ``distinct_1`` / ``distinct_2``: distinct n-grams / all n-grams over the texts (diversity).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from saescope.activations.read import sink_mask
from saescope.embeddings import sentence_embeddings
from saescope.errors import SaescopeError
from saescope.model.generation import format_prompts, generate
from saescope.model.hooks import capture
from saescope.model.loading import LoadedModel
from saescope.reports import figure, save_png
from saescope.sae.core import SAE
from saescope.steering.features import FeatureEdit, FeatureSteering


def steering_sweep(lm: LoadedModel, sae: SAE, feature: int, coeffs: list[float], prompts: list[str],
                   description: str | None = None, max_new_tokens: int = 40, n: int = 1, seed: int = 0,
                   temperature: float = 1.0, chat: bool = False) -> pd.DataFrame:
    """One row per coefficient (see the module docstring). Example::

        table = steering_sweep(lm, sae, 123, [-8, 0, 4, 8, 16], ["Tell me a story."])
    """
    sae.check_feature(feature)
    lm.check_sae(sae)
    if not coeffs:
        raise SaescopeError("no coefficients given")
    texts_in = format_prompts(lm, prompts, chat)
    rows = []
    for coeff in coeffs:
        steer = FeatureSteering(sae, [FeatureEdit(feature, "add", coeff)])
        outputs = generate(lm, prompts, steer, max_new_tokens, temperature, n, seed, chat)
        pairs = [(prompt, text) for prompt, samples in zip(texts_in, outputs) for text in samples]
        activation, perplexity = _read_back(lm, sae, feature, pairs)
        row = {"coeff": coeff, "concept_activation": activation, "perplexity": perplexity,
               "distinct_1": distinct_ngrams([t for _, t in pairs], 1),
               "distinct_2": distinct_ngrams([t for _, t in pairs], 2), "n_texts": len(pairs),
               "example": pairs[0][1]}
        if description:
            emb = sentence_embeddings([description] + [t for _, t in pairs])
            row["concept_similarity"] = float((emb[1:] @ emb[0]).mean())
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def _read_back(lm: LoadedModel, sae: SAE, feature: int, pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """Mean feature activation on the generated tokens and their perplexity, unsteered model."""
    hook = sae.cfg.hook_name
    total_act, total_nll, n_tokens = 0.0, 0.0, 0
    for prompt, text in pairs:
        prompt_ids = lm.encode(prompt)
        text_ids = lm.encode(text)
        if not text_ids:
            continue
        ids = torch.tensor([prompt_ids + text_ids], device=lm.device)
        with capture(lm.model, [hook]) as acts:
            logits = lm.model(ids).logits[0, len(prompt_ids) - 1:-1].float()
        generated = acts[hook][:, len(prompt_ids):]
        feats = sae.encode(generated.float())[..., feature] * ~sink_mask(acts[hook])[:, len(prompt_ids):]
        total_act += float(feats.sum())
        total_nll += float(F.cross_entropy(logits, ids[0, len(prompt_ids):], reduction="sum"))
        n_tokens += len(text_ids)
    if n_tokens == 0:
        return 0.0, float("nan")
    return total_act / n_tokens, float(torch.tensor(total_nll / n_tokens).exp())


def distinct_ngrams(texts: list[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (0 when there are none)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def plot_sweep(table: pd.DataFrame, path: str | Path, title: str) -> Path:
    """A PNG with concept strength, perplexity and diversity against the coefficient."""
    columns = [c for c in ("concept_activation", "concept_similarity", "perplexity", "distinct_2") if c in table]
    fig, axes = figure(4 * len(columns), 3.2, ncols=len(columns))
    for ax, column in zip(axes, columns):
        ax.plot(table.coeff, table[column], marker="o")
        ax.set_xlabel("coefficient")
        ax.set_title(column)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_png(fig, path)
