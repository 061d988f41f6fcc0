"""How right an explanation is, measured on score-split contexts the explainer never saw.

Each scorer maps ``{feature: explanation}`` to one row per feature: ``score`` (its headline number) with
its 95 % bootstrap interval ``score_low``/``score_high`` (``intervals``), ``auc`` (threshold-free, when it has
one), the numbers of positive/negative items and of failed requests.

- ``embedding`` (no LLM): all-MiniLM-L6-v2 similarity of the explanation to each context, cut to the sampled
  token and the one before it (``EMBEDDING_WINDOW``); ``score`` = AUC of activating vs non-activating contexts.
  The window was chosen on 40 tuning features (never the reported ones): with the top-token baseline the
  AUC was 0.57 / 0.62 / 0.65 / 0.70 / 0.72 for (left, right) = (16, 4) / (8, 2) / (4, 1) / (2, 1) / (1, 0): a
  whole context's embedding is about its topic, not the token the feature fires on.
- ``detection``: the LLM reads the explanation and an unmarked context (``LLM_WINDOW`` tokens around the
  sample) and says whether the feature is active in it (Yes/No); ``score`` = balanced accuracy, ``auc``
  from log P(Yes) - log P(No).
- ``fuzzing``: activating contexts with the true tokens marked vs the same contexts with as many
  *other* tokens marked; the LLM says whether the explanation describes the marked words.
- ``simulation``: the LLM predicts, from the explanation alone, how strongly the feature fires on the
  sampled token of each context (0-9: the expected digit under its first-token log-probs, or the digit it
  writes); ``score`` = Pearson r with the true activations (0 on non-activating contexts). This is
  OpenAI's simulation scoring at one token per context, which any chat API can answer.
- ``intervention`` (in ``intervention``): steer with the feature, ask whether the text shows the explanation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from saescope.autointerp.examples import Context, scoring_contexts
from saescope.autointerp.intervals import auc_interval, balanced_interval, pearson_interval
from saescope.autointerp.llm.protocol import ChatRequest, LLMClient, LLMError, expected_digit, yes_no_margin
from saescope.autointerp.prompts import detection_request, fuzzing_request, simulation_request
from saescope.embeddings import sentence_embeddings

EMBEDDING_WINDOW = (1, 0)
LLM_WINDOW = (8, 2)


def embedding_scores(samples: pd.DataFrame, explanations: dict[int, str]) -> list[dict]:
    features = list(explanations)
    texts: list[str] = []
    spans = {}
    for feature in features:
        pos, neg = scoring_contexts(samples, feature)
        spans[feature] = (len(texts), len(pos), len(neg))
        texts += [c.trimmed(*EMBEDDING_WINDOW).plain() for c in pos + neg]
    contexts = sentence_embeddings(texts) if texts else None
    explained = sentence_embeddings([explanations[f] for f in features])
    rows = []
    for row, feature in enumerate(features):
        start, n_pos, n_neg = spans[feature]
        if n_pos == 0 or n_neg == 0:
            rows.append(_row(feature, math.nan, math.nan, n_pos, n_neg, 0))
            continue
        similarity = (contexts[start:start + n_pos + n_neg] @ explained[row]).numpy()
        truth = np.array([1] * n_pos + [0] * n_neg)
        auc = float(roc_auc_score(truth, similarity))
        rows.append(_row(feature, auc, auc, n_pos, n_neg, 0, auc_interval(similarity, truth, feature)))
    return rows


def detection_scores(samples: pd.DataFrame, explanations: dict[int, str], client: LLMClient,
                     max_contexts: int = 10, seed: int = 0) -> list[dict]:
    def items(feature: int, rng: random.Random) -> tuple[list[ChatRequest], list[int]]:
        pos, neg = scoring_contexts(samples, feature, LLM_WINDOW)
        pos, neg = _pick(pos, max_contexts, rng), _pick(neg, max_contexts, rng)
        return [detection_request(explanations[feature], c) for c in pos + neg], [1] * len(pos) + [0] * len(neg)

    return yes_no_scores(explanations, client, items, seed)


def fuzzing_scores(samples: pd.DataFrame, explanations: dict[int, str], client: LLMClient,
                   max_contexts: int = 10, seed: int = 0) -> list[dict]:
    def items(feature: int, rng: random.Random) -> tuple[list[ChatRequest], list[int]]:
        pos = [c for c in _pick(scoring_contexts(samples, feature, LLM_WINDOW)[0], max_contexts, rng)
               if any(a <= 0 for a in c.acts)]
        true = [fuzzing_request(explanations[feature], c.marked()) for c in pos]
        wrong = [fuzzing_request(explanations[feature], c.marked(c.misplaced_marks(rng))) for c in pos]
        return true + wrong, [1] * len(true) + [0] * len(wrong)

    return yes_no_scores(explanations, client, items, seed)


def simulation_scores(samples: pd.DataFrame, explanations: dict[int, str], client: LLMClient,
                      max_contexts: int = 10, seed: int = 0) -> list[dict]:
    requests, truth, owner = [], [], []
    for feature in explanations:
        rng = random.Random(f"{seed}:{feature}")
        pos, neg = scoring_contexts(samples, feature, LLM_WINDOW)
        for context in _pick(pos, max_contexts, rng) + _pick(neg, max_contexts, rng):
            requests.append(simulation_request(explanations[feature], context))
            truth.append(context.activation)
            owner.append(feature)
    answers = client.complete_many(requests) if requests else []
    predicted = [None if isinstance(a, LLMError) else expected_digit(a) for a in answers]
    rows = []
    grouped = _by_owner(list(zip(predicted, truth)), owner)
    for feature in explanations:
        mine = grouped.get(feature, [])
        scored = [(p, t) for p, t in mine if p is not None]
        n_pos, n_neg = sum(t > 0 for _, t in scored), sum(t <= 0 for _, t in scored)
        pairs = np.array(scored, dtype=float).reshape(-1, 2)
        r = float(pearsonr(pairs[:, 0], pairs[:, 1]).statistic) if len(pairs) > 2 and pairs.std(0).min() > 0 else math.nan
        rows.append(_row(feature, r, math.nan, n_pos, n_neg, len(mine) - len(scored),
                         pearson_interval(pairs[:, 0], pairs[:, 1], feature)))
    return rows


def yes_no_scores(explanations: dict[int, str], client: LLMClient,
                   items: Callable[[int, random.Random], tuple[list[ChatRequest], list[int]]], seed: int) -> list[dict]:
    """Ask every item of every feature in one ``complete_many`` call; score each feature's Yes/No answers."""
    requests, labels, owner = [], [], []
    for feature in explanations:
        asked, truth = items(feature, random.Random(f"{seed}:{feature}"))
        requests += asked
        labels += truth
        owner += [feature] * len(asked)
    answers = client.complete_many(requests) if requests else []
    margins = [None if isinstance(a, LLMError) else yes_no_margin(a) for a in answers]
    rows = []
    grouped = _by_owner(list(zip(margins, labels)), owner)
    for feature in explanations:
        mine = grouped.get(feature, [])
        scored = [(m, y) for m, y in mine if m is not None]
        n_pos, n_neg = sum(y for _, y in scored), sum(1 - y for _, y in scored)
        if n_pos == 0 or n_neg == 0:
            rows.append(_row(feature, math.nan, math.nan, n_pos, n_neg, len(mine) - len(scored)))
            continue
        margin = np.clip(np.array([m for m, _ in scored], dtype=float), -1e6, 1e6)
        truth = np.array([y for _, y in scored])
        said = margin > 0
        balanced = 0.5 * (said[truth == 1].mean() + (~said[truth == 0]).mean())
        rows.append(_row(feature, float(balanced), float(roc_auc_score(truth, margin)), n_pos, n_neg,
                         len(mine) - len(scored), balanced_interval(said, truth, feature)))
    return rows


def _by_owner(items: list, owner: list[int]) -> dict[int, list]:
    """The items of each feature, in order (one pass, not one scan per feature)."""
    grouped: dict[int, list] = {}
    for item, feature in zip(items, owner):
        grouped.setdefault(feature, []).append(item)
    return grouped


def _pick(contexts: list[Context], n: int, rng: random.Random) -> list[Context]:
    return contexts if len(contexts) <= n else rng.sample(contexts, n)


def _row(feature: int, score: float, auc: float, n_pos: int, n_neg: int, failed: int,
         interval: tuple[float, float] = (math.nan, math.nan)) -> dict:
    return {"feature": feature, "score": score, "score_low": interval[0], "score_high": interval[1], "auc": auc,
            "n_pos": n_pos, "n_neg": n_neg, "failed": failed}
