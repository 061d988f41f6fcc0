"""Contrast pairs: JSONL files of ``{"positive": ..., "negative": ...}`` (optional
``positive_completion`` / ``negative_completion``), and the sets shipped in ``data/pairs``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saescope.errors import SaescopeError
from saescope.resources import shipped_or_path
from saescope.storage import read_jsonl


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
    for lineno, row in read_jsonl(path, "pairs file", ("positive", "negative")):
        pair = ContrastPair(str(row["positive"]), str(row["negative"]), row.get("positive_completion"),
                            row.get("negative_completion"))
        if not pair.positive.strip() or not pair.negative.strip():
            raise SaescopeError(f"{path}, line {lineno}: empty positive or negative text")
        pairs.append(pair)
    if len(pairs) < minimum:
        raise SaescopeError(f"{path} has {len(pairs)} pairs; at least {minimum} are needed")
    return pairs


def pairs_path(name_or_path: str | Path) -> Path:
    """A shipped pair set by name (``gender_train``, ``gender_heldout``, ``gender``, ``agreeableness``)
    or a JSONL path."""
    return shipped_or_path(str(name_or_path), "pairs", ".jsonl")
