"""How an explanation is shown beside a feature id: the best explanation of a feature, and its scores with
their 95 % intervals (``FeatureRun.explanations()`` entries; ``autointerp.intervals`` computes them)."""

from __future__ import annotations

import math
from typing import Any


def score_text(explanation: dict[str, Any]) -> str:
    """An explanation's scores with their 95 % intervals, e.g. ``detection 0.82 [0.70, 0.93]`` (``""`` if unscored)."""
    parts = []
    for scorer, value in explanation.get("scores", {}).items():
        low, high = explanation.get("intervals", {}).get(scorer, (math.nan, math.nan))
        interval = f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else ""
        parts.append(f"{scorer} {value:.2f}{interval}")
    return "; ".join(parts)


def explanation_label(explanations: list[dict[str, Any]]) -> str:
    """``best_explanation`` with its scores and intervals, as shown wherever a feature id appears:
    ``he/him pronouns (detection 0.82 [0.70, 0.93])``."""
    chosen = _chosen(explanations)
    if chosen is None:
        return ""
    scored = score_text(chosen)
    return f"{chosen['explanation']} ({scored})" if scored else chosen["explanation"]


def _chosen(explanations: list[dict[str, Any]]) -> dict[str, Any] | None:
    usable = [e for e in explanations if e["explanation"]]
    return next((e for e in usable if e["explainer"] != "top_tokens"), usable[0] if usable else None)


def best_explanation(explanations: list[dict[str, Any]]) -> str:
    """From ``FeatureRun.explanations()[f]``: an LLM's explanation that did not fail, else the top-token one."""
    chosen = _chosen(explanations)
    return chosen["explanation"] if chosen else ""
