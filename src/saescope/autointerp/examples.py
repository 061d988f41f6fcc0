"""What explainers and scorers read: a feature's contexts as text, its activating tokens marked ``<<like this>>``.

- The explainer sees the RUN's top-K contexts (train split) and, when ``samples.parquet`` exists, its
  ``split == "explain"`` samples from every activation quantile.
- Scorers see only ``split == "score"`` samples: activating ones from every quantile, and the
  non-activating ones (``quantile == -1``). Nothing a scorer sees was shown to the explainer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import pandas as pd

from saescope.features.run import FeatureRun

OPEN, CLOSE = "<<", ">>"
SPECIAL = re.compile(r"<\|[^|<>]*\|>")


@dataclass
class Context:
    """One context of one feature."""

    tokens: list[str]
    acts: list[float]
    activation: float
    """The feature's activation at the sampled token (0 for a non-activating context)."""
    quantile: int
    """-1: the feature does not fire there; else its activation quantile bin (top-K contexts: the top bin)."""
    center: int = 0
    """Index of the sampled token in ``tokens``."""

    def trimmed(self, left: int, right: int) -> Context:
        """At most ``left`` tokens before the sampled one and ``right`` after it."""
        lo, hi = max(0, self.center - left), self.center + right + 1
        return Context(self.tokens[lo:hi], self.acts[lo:hi], self.activation, self.quantile, self.center - lo)

    @property
    def fires(self) -> bool:
        return self.quantile >= 0

    def plain(self) -> str:
        return clean("".join(self.tokens))

    def marked(self, marks: list[bool] | None = None) -> str:
        """The text with marked tokens (default: the tokens where the feature fires) between ``<<`` and ``>>``;
        neighbouring marked tokens share one pair."""
        marks = marks if marks is not None else [a > 0 for a in self.acts]
        out, open_ = [], False
        for token, mark in zip(self.tokens, marks):
            if mark and not open_:
                stripped = token.lstrip()
                out.append(token[:len(token) - len(stripped)] + OPEN + stripped)
            elif not mark and open_:
                out.append(CLOSE + token)
            else:
                out.append(token)
            open_ = mark
        return clean("".join(out) + (CLOSE if open_ else ""))

    def misplaced_marks(self, rng: random.Random) -> list[bool]:
        """As many marks as the true ones (at least one), on tokens where the feature does not fire."""
        quiet = [i for i, a in enumerate(self.acts) if a <= 0]
        count = min(max(1, sum(a > 0 for a in self.acts)), len(quiet))
        chosen = set(rng.sample(quiet, count))
        return [i in chosen for i in range(len(self.tokens))]


def clean(text: str) -> str:
    """One line: special tokens (``<|im_end|>`` between documents) and newlines shown as spaces, runs of
    spaces collapsed."""
    return " ".join(SPECIAL.sub(" ", text).replace("\n", " ").split())


def _contexts(table: pd.DataFrame, quantile: int | None = None) -> list[Context]:
    return [Context(list(r.context_tokens), [float(a) for a in r.context_acts], float(r.activation),
                    int(r.quantile) if quantile is None else quantile, int(r.center)) for r in table.itertuples()]


def explainer_contexts(run: FeatureRun, samples: pd.DataFrame | None, feature: int, top: int = 6,
                       per_quantile: int = 1, left: int = 12, right: int = 3) -> list[Context]:
    """The top-``top`` contexts of ``feature`` from the RUN, then ``per_quantile`` explain-split samples per bin
    (strongest bin first), each cut to ``left`` tokens before the sampled one and ``right`` after."""
    contexts = _contexts(run.examples(feature).head(top), quantile=10**6)
    if samples is not None:
        mine = samples[(samples.feature == feature) & (samples.split == "explain") & (samples["quantile"] >= 0)]
        contexts += _contexts(mine.sort_values("quantile", ascending=False).groupby("quantile", sort=False).head(per_quantile))
    return [c.trimmed(left, right) for c in contexts]


def scoring_contexts(samples: pd.DataFrame, feature: int, window: tuple[int, int] | None = None
                     ) -> tuple[list[Context], list[Context]]:
    """``(activating, non_activating)`` score-split contexts of ``feature``, cut to ``window`` = (left, right)."""
    mine = samples[(samples.feature == feature) & (samples.split == "score")]
    pos, neg = _contexts(mine[mine["quantile"] >= 0]), _contexts(mine[mine["quantile"] < 0])
    if window is None:
        return pos, neg
    return [c.trimmed(*window) for c in pos], [c.trimmed(*window) for c in neg]


def promoted_tokens(run: FeatureRun, feature: int, n: int = 8) -> list[str]:
    """The output tokens ``feature`` promotes most (decoder direction through the unembedding)."""
    table = run.logit_effects
    rows = table[(table.feature == feature) & (table.kind == "promoted")].sort_values("rank").head(n)
    return [t.strip() for t in rows.token if t.strip()]


def top_token_words(run: FeatureRun, feature: int, n: int = 8) -> list[str]:
    """The distinct words ``feature`` fires on most strongly (from the RUN's top-token table)."""
    table = run.top_tokens
    rows = table[table.feature == feature].sort_values("rank")
    words: list[str] = []
    for token in rows.token:
        word = token.strip()
        if word and word.lower() not in {w.lower() for w in words}:
            words.append(word)
        if len(words) == n:
            break
    return words
