"""``TokenGate``: marks the tokens of listed words, and each sequence's first token, so that a
``SubspaceErasure`` leaves them alone.

It plays the same part as ``FeatureGate``, but it reads the token ids (``hook_tokens``), so it is known
before block 0. An erasure can therefore act at every layer from the embedding up. The words come
from a shipped lexicon and from the user:
- ``"gendered"``: ``data/bias/lexicon``, nouns and pronouns whose gender is part of their meaning,
  plus first names given to one sex. The files' ``SOURCE.md`` gives the sources and the fixed rules
  behind them.
- ``words``: any extra words.

With ``after=True`` the gate also marks every token that follows a marked word in its row (and, in
decode steps, in the rows it continues). That is for deep layers: there a later position has already
read the word's gender (the last position of "The king said that" reads "king" at layers 24-28), and
erasing it there would erase definitional gender.

Matching:
- A word is matched as its whole token sequence, in lowercase, Capitalised and UPPERCASE, with and
  without a leading space. Names are matched Capitalised only.
- Words longer than ``MAX_TOKENS`` tokens are not matched; they are counted in ``skipped``.
- Every token of a match is marked.

Sequences and decode steps follow the convention of ``Positions``:
- A forward of several tokens starts new sequences. Each row's first real token (after any left
  padding) is marked, because that token is the attention sink. Every later position reads it, so
  erasing there shifts every position; saescope never edits a sink.
- A one-token forward (a KV-cached decode step) continues the previous rows. The gate keeps each
  row's last ``MAX_TOKENS - 1`` tokens, so a word split across decode steps is still found.

Example::

    gate = TokenGate("gendered", words=["baroness"])
    erase = SubspaceErasure("blocks.3.hook_resid_post", direction, mean, gate=gate)
"""

from __future__ import annotations

import weakref
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.model.hooks import TOKENS, HookFn
from saescope.model.loading import LoadedModel
from saescope.resources import data_path

MAX_TOKENS = 3  # longest word (in tokens) a gate matches
LEXICONS = {"gendered": ("gendered_words.txt", "gendered_names.txt")}


def _lines(name: str) -> list[str]:
    text = (data_path("bias", "lexicon") / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=4)
def read_lexicon(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(words, names)`` of a shipped lexicon: words are matched in every casing, names Capitalised."""
    if name not in LEXICONS:
        raise SaescopeError(f"unknown word lexicon {name!r}: use one of {', '.join(LEXICONS)}")
    words, names = LEXICONS[name]
    return tuple(_lines(words)), tuple(_lines(names))


def _variants(word: str, any_case: bool) -> set[str]:
    forms = {word, word.lower(), word.capitalize(), word.upper()} if any_case else {word}
    return {text for form in forms for text in (form, " " + form)}


_KEYS: dict[tuple, tuple[dict[int, Tensor], list[str]]] = {}
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # loaded gates by their saved fields


def _sequence_keys(lm: LoadedModel, name: str | None, extra: list[str]) -> tuple[dict[int, Tensor], list[str]]:
    """``({n: sorted keys of the n-token sequences}, texts longer than MAX_TOKENS)``; a key is
    ``sum(id_j * vocab**j)``, exact in int64 for vocabularies up to 2 million tokens."""
    words, names = read_lexicon(name) if name else ((), ())
    texts = {t for w in (*words, *extra) for t in _variants(w, True)} | {t for n in names for t in _variants(n, False)}
    base, skipped = len(lm.tokenizer), []
    keys: dict[int, set[int]] = {n: set() for n in range(1, MAX_TOKENS + 1)}
    ordered = sorted(texts)
    for text, ids in zip(ordered, lm.encode(ordered)):
        if not 1 <= len(ids) <= MAX_TOKENS:
            skipped.append(text)
            continue
        keys[len(ids)].add(sum(i * base ** j for j, i in enumerate(ids)))
    return {n: torch.tensor(sorted(k), dtype=torch.long) for n, k in keys.items() if k}, skipped


class TokenGate:
    """Marks the tokens of ``lexicon``'s words, of ``words``, and each sequence's first token; with
    ``after``, also every token that follows a marked word in its row (deep layers, where later positions
    have already read the word)."""

    hook = TOKENS

    def __init__(self, lexicon: str | None = "gendered", words: list[str] | None = None, after: bool = False) -> None:
        self.lexicon, self.after = lexicon, bool(after)
        self.words = [str(w).strip() for w in words or []]
        if any(not w for w in self.words):
            raise SaescopeError("a token gate's words must be non-empty strings")
        if lexicon is None and not self.words:
            raise SaescopeError("a token gate needs a lexicon or at least one word")
        if lexicon is not None:
            read_lexicon(lexicon)  # checks the name now, not at the first forward pass
        self.skipped: list[str] = []
        self._history: dict[str, Tensor] = {}  # the rows' last tokens, across decode steps (gate_fn resets it)
        self._last: tuple[Tensor, Tensor] | None = None  # (ids, marks) of the latest forward pass

    def sequences(self, lm: LoadedModel) -> dict[int, Tensor]:
        """Per length ``n`` (1..MAX_TOKENS), the sorted keys of the token sequences to mark (computed once
        per lexicon, words and tokenizer: a multi-layer erasure has one gate per layer)."""
        tokenizer = lm.tokenizer
        key = (self.lexicon, tuple(self.words), id(tokenizer), getattr(tokenizer, "name_or_path", ""), len(tokenizer))
        if key not in _KEYS:
            if len(_KEYS) > 8:  # a few tokenizers at most: keep the cache small
                _KEYS.clear()
            _KEYS[key] = _sequence_keys(lm, self.lexicon, self.words)
        keys, self.skipped = _KEYS[key]
        return keys

    def unmatched(self, lm: LoadedModel) -> list[str]:
        """The given ``words`` that the gate can never match on ``lm``: every variant is longer than
        ``MAX_TOKENS`` tokens."""
        self.sequences(lm)
        skipped = set(self.skipped)
        return [w for w in self.words if _variants(w, True) <= skipped]

    def gate_fn(self, lm: LoadedModel, state: dict[str, Tensor]) -> HookFn:
        """A ``hook_tokens`` reader that stores ``state["skip"]`` [batch, seq, 1]: True on marked tokens.

        Every erasure that shares this gate (a scrub has one per layer) registers a reader, and all of them
        see the same ``input_ids`` tensor in a forward pass: the first one computes the marks, the others
        reuse them. The decode-step history lives on the gate too, so it advances once per pass; each
        application starts it afresh."""
        keys = {n: k.to(lm.device) for n, k in self.sequences(lm).items()}
        base, pad = len(lm.tokenizer), lm.pad_id
        self._history, self._last = {}, None

        def mark(ids: Tensor) -> None:
            if self._last is None or self._last[0] is not ids:
                self._last = (ids, self._marks(ids, keys, base, pad)[..., None])
            state["skip"] = self._last[1]

        return mark

    def _marks(self, ids: Tensor, keys: dict[int, Tensor], base: int, pad: int) -> Tensor:
        """``[batch, seq]`` bool marks of one forward's ids (module docstring), advancing the history."""
        history = self._history
        batch, seq = ids.shape
        kept = history.get("ids")
        continuing = seq == 1 and kept is not None and len(kept) == batch
        full = torch.cat([kept, ids], 1) if continuing else ids
        marked = torch.zeros_like(full, dtype=torch.bool)
        for n, wanted in keys.items():
            if full.shape[1] < n:
                continue
            windows = full.unfold(1, n, 1)  # [batch, seq - n + 1, n]
            code = sum(windows[..., j] * base ** j for j in range(n))
            hit = torch.isin(code, wanted)
            for j in range(n):
                marked[:, j:j + hit.shape[1]] |= hit
        marked = marked[:, -seq:]
        if self.after:  # every token from a marked word on, across decode steps
            marked = marked.int().cummax(1).values.bool()
            if continuing and "seen" in history:
                marked |= history["seen"][:, None]
            history["seen"] = marked[:, -1]
        if not continuing:  # new sequences: the first real token (after left padding) is the sink
            first = (ids != pad).int().argmax(1) if seq > 1 else torch.zeros(batch, dtype=torch.long, device=ids.device)
            marked[torch.arange(batch, device=ids.device), first] = True
        history["ids"] = full[:, -(MAX_TOKENS - 1):]
        return marked

    def to_dict(self) -> dict[str, Any]:
        return {"type": "TokenGate", "lexicon": self.lexicon, "words": self.words, "after": self.after}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> TokenGate:
        """The gate a saved erasure names; equal gates load as one object, so the parts of a loaded scrub
        share their marks as the ones it was built with do."""
        key = (data.get("lexicon"), tuple(data.get("words") or ()), bool(data.get("after", False)))
        gate = _LOADED.get(key)
        if gate is None:
            gate = _LOADED[key] = cls(key[0], list(key[1]), key[2])
        return gate
