"""Contrast pairs: JSONL files of ``{"positive": ..., "negative": ...}`` (optional
``positive_completion`` / ``negative_completion``), and the sets shipped in ``data/pairs``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from saescope.errors import SaescopeError
from saescope.resources import shipped_or_path
from saescope.storage import read_text


@dataclass
class ContrastPair:
    positive: str
    negative: str
    positive_completion: str | None = None
    negative_completion: str | None = None


def read_pairs(path: str | Path, minimum: int = 2) -> list[ContrastPair]:
    """Read a JSONL of ``{"positive": ..., "negative": ...}`` pairs (line numbers in every error)."""
    path = Path(path)
    pairs = []
    for lineno, line in enumerate(read_text(path, "pairs file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = ContrastPair(str(row["positive"]), str(row["negative"]), row.get("positive_completion"),
                                row.get("negative_completion"))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SaescopeError(f"{path}:{lineno}: expected a JSON object with \"positive\" and \"negative\" "
                                f"({type(exc).__name__})") from None
        if not pair.positive.strip() or not pair.negative.strip():
            raise SaescopeError(f"{path}:{lineno}: empty positive or negative text")
        pairs.append(pair)
    if len(pairs) < minimum:
        raise SaescopeError(f"{path} has {len(pairs)} pairs; at least {minimum} are needed")
    return pairs


def pairs_path(name_or_path: str | Path) -> Path:
    """A shipped pair set by name (``gender_train``, ``gender_heldout``, ``gender``, ``agreeableness``)
    or a JSONL path."""
    return shipped_or_path(str(name_or_path), "pairs", ".jsonl")
