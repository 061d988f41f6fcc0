"""An on-disk answer cache in front of any client, so a re-run of ``explain`` or ``score`` costs nothing.

One SQLite file (``$SAESCOPE_HOME/cache/llm.sqlite`` by default; SQLite commits are atomic and several
processes may share it), keyed by ``ChatRequest.key(model)``: the model name and everything in the request.
Failed requests are not cached, so a re-run retries them. Usage (tokens, requests, cost) is counted here.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from saescope.autointerp.llm.protocol import ChatRequest, Completion, LLMClient, LLMError, Usage
from saescope.errors import SaescopeError
from saescope.storage import saescope_home


def default_cache_path() -> Path:
    return saescope_home() / "cache" / "llm.sqlite"


class CachedClient:
    """Wraps an ``LLMClient``: answers from the cache when it can, asks the client for the rest. Example::

        client = CachedClient(LocalChatClient(lm))
        client.complete_many(requests); client.usage.summary()
    """

    def __init__(self, inner: LLMClient, path: str | Path | None = None, usage: Usage | None = None) -> None:
        self.inner, self.model = inner, inner.model
        self.usage = usage or Usage()
        self.path = Path(path) if path else default_cache_path()
        if self.path.is_dir():
            raise SaescopeError(f"the answer cache {self.path} is a folder: name an SQLite file, e.g. {self.path / 'llm.sqlite'}")
        self.lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, completion TEXT NOT NULL)")
            self.db.commit()
        except (sqlite3.Error, OSError) as exc:  # sqlite3.DatabaseError: "file is not a database"
            raise SaescopeError(f"the answer cache {self.path} is not a usable SQLite file ({exc}): "
                                "name another --cache or delete it") from None

    def complete_many(self, requests: list[ChatRequest]) -> list[Completion | LLMError]:
        keys = [r.key(self.model) for r in requests]
        out: list[Completion | LLMError | None] = [self._get(k) for k in keys]
        missing = [i for i, c in enumerate(out) if c is None]
        if missing:
            answers = self.inner.complete_many([requests[i] for i in missing])
            with self.lock:
                for i, answer in zip(missing, answers):
                    out[i] = answer
                    if isinstance(answer, Completion):
                        self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (keys[i], answer.to_json()))
                self.db.commit()
        for answer in out:
            self.usage.add(answer if isinstance(answer, Completion) else None)
        return out  # type: ignore[return-value]

    def _get(self, key: str) -> Completion | None:
        with self.lock:
            row = self.db.execute("SELECT completion FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        completion = Completion.from_json(row[0])
        completion.cached = True
        return completion
