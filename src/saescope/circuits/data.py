"""Prompt pairs for circuit discovery: reading, validating and tokenizing them.

A **pair** is a clean prompt, a patch prompt (the same prompt with the decisive token changed) and
the answer token each of them should be followed by. Files are JSON lines, either
``{"clean", "patch", "clean_answer", "patch_answer"}`` or the Sparse Feature Circuits fields
``{"clean_prefix", "patch_prefix", "clean_answer", "patch_answer"}``. Shipped sets: ``sva_simple_train``,
``sva_simple_test``, ``sva_nounpp_*``, ``sva_within_rc_*`` (``data/circuits/SOURCE.md``: split by noun).

**No-pair mode** (``get_circuit_nopair.sh`` of the reference): lines ``{"prompt", "answer"}`` or
``{"text"}`` (the answer is the text's last token); the patch is zero ablation.

Every prompt starts with the model's document-start token, which takes the attention sink; answers
must be single tokens; a pair's two prompts must have the same number of tokens (node effects are
per position).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.likelihood import document_start_id
from saescope.model.loading import LoadedModel
from saescope.resources import shipped_or_path
from saescope.storage import read_jsonl


@dataclass(frozen=True)
class Pair:
    """One contrast pair (``patch`` is ``None`` in no-pair mode, where the patch is zero ablation)."""

    clean: str
    clean_answer: str
    patch: str | None = None
    patch_answer: str | None = None


@dataclass
class PairBatch:
    """Tokenized pairs of equal length: ``clean_ids``/``patch_ids`` [n, seq] (``patch_ids`` None without
    pairs), ``clean_answer``/``patch_answer`` [n] token ids."""

    clean_ids: Tensor
    clean_answer: Tensor
    patch_ids: Tensor | None = None
    patch_answer: Tensor | None = None

    def __len__(self) -> int:
        return len(self.clean_ids)

    def to(self, device: torch.device | str) -> PairBatch:
        move = (lambda t: None if t is None else t.to(device))
        return PairBatch(move(self.clean_ids), move(self.clean_answer), move(self.patch_ids), move(self.patch_answer))

    def select(self, rows: list[int] | Tensor) -> PairBatch:
        pick = (lambda t: None if t is None else t[rows])
        return PairBatch(pick(self.clean_ids), pick(self.clean_answer), pick(self.patch_ids), pick(self.patch_answer))


def read_pairs(source: str | Path, limit: int | None = None) -> list[Pair]:
    """Pairs from a shipped set name (``sva_simple_train``) or a JSONL file; ``limit`` keeps the first ones."""
    if limit is not None and limit < 1:
        raise SaescopeError(f"the pair limit must be at least 1, got {limit}")
    path = shipped_or_path(str(source), "circuits", ".jsonl")
    if not path.is_file():
        raise SaescopeError(f"pair file {str(source)!r} does not exist (shipped sets: sva_simple_train, sva_simple_test, "
                            "sva_nounpp_train, sva_nounpp_test, sva_within_rc_train, sva_within_rc_test)")
    pairs = []
    for line, row in read_jsonl(path, "pair file"):
        pairs.append(_pair(row, path, line))
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise SaescopeError(f"{path}: no pairs (expected JSON lines with clean, patch, clean_answer, patch_answer)")
    if len({p.patch is None for p in pairs}) > 1:
        raise SaescopeError(f"{path}: mixes pairs and single prompts; use one kind per file")
    return pairs


def _pair(row: dict, path: Path, line: int) -> Pair:
    where = f"{path}, line {line}"
    clean, patch = row.get("clean", row.get("clean_prefix")), row.get("patch", row.get("patch_prefix"))
    if clean is None and "prompt" in row:
        return _single(row.get("prompt"), row.get("answer"), where)
    if clean is None and "text" in row:
        return _single(row.get("text"), None, where)
    values = [clean, patch, row.get("clean_answer"), row.get("patch_answer")]
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise SaescopeError(f"{where}: expected non-empty strings clean, patch, clean_answer, patch_answer "
                            "(or prompt + answer, or text)")
    return Pair(clean, row["clean_answer"], patch, row["patch_answer"])


def _single(prompt: object, answer: object, where: str) -> Pair:
    if not isinstance(prompt, str) or not prompt.strip() or (answer is not None and not isinstance(answer, str)):
        raise SaescopeError(f"{where}: expected a non-empty string prompt (and a string answer) or text")
    return Pair(prompt, answer if answer is not None else "")


def tokenize_pairs(lm: LoadedModel, pairs: list[Pair], drop_unequal: bool = True) -> tuple[list[PairBatch], list[int]]:
    """One ``PairBatch`` per prompt length (pairs in each keep their order), every row validated, and the
    indices of the pairs dropped because their clean and patch prompts tokenize to different lengths
    (as the reference implementation does; ``drop_unequal=False`` makes that an error)."""
    start = document_start_id(lm)
    rows: dict[int, list[tuple[list[int], int, list[int] | None, int | None]]] = {}
    dropped = []
    for index, pair in enumerate(pairs):
        clean, clean_answer = _prompt_and_answer(lm, pair.clean, pair.clean_answer, index)
        patch = patch_answer = None
        if pair.patch is not None:
            patch, patch_answer = _prompt_and_answer(lm, pair.patch, pair.patch_answer or "", index)
            if len(patch) != len(clean) and drop_unequal:
                dropped.append(index)
                continue
            if len(patch) != len(clean):
                raise SaescopeError(f"pair {index + 1}: clean and patch prompts have {len(clean)} and {len(patch)} "
                                    f"tokens ({pair.clean!r} / {pair.patch!r}); node effects need equal lengths: "
                                    "drop or rewrite the pair")
            patch = [start, *patch]
        rows.setdefault(len(clean), []).append(([start, *clean], clean_answer, patch, patch_answer))
    batches = []
    for length in sorted(rows):
        group = rows[length]
        batches.append(PairBatch(
            torch.tensor([r[0] for r in group]), torch.tensor([r[1] for r in group]),
            None if group[0][2] is None else torch.tensor([r[2] for r in group]),
            None if group[0][3] is None else torch.tensor([r[3] for r in group])))
    if not batches:
        raise SaescopeError(f"none of the {len(pairs)} pairs has clean and patch prompts of equal token length "
                            "for this tokenizer: node effects need equal lengths")
    return batches, dropped


def _prompt_and_answer(lm: LoadedModel, prompt: str, answer: str, index: int) -> tuple[list[int], int]:
    ids = lm.encode(prompt)
    if not answer:  # no-pair text: its last token is the answer
        if len(ids) < 2:
            raise SaescopeError(f"prompt {index + 1} ({prompt!r}) needs at least two tokens: a context and the answer")
        return ids[:-1], ids[-1]
    answer_ids = lm.encode(answer)
    if len(answer_ids) != 1:
        raise SaescopeError(f"pair {index + 1}: answer {answer!r} is {len(answer_ids)} tokens for this tokenizer; "
                            "answers must be single tokens (a leading space usually makes one)")
    if not ids:
        raise SaescopeError(f"pair {index + 1}: empty prompt")
    return ids, answer_ids[0]
