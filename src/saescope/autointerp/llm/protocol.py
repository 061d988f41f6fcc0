"""The one protocol every explainer/scorer LLM speaks, and what it answers.

A client takes chat ``messages`` and returns a ``Completion``: the text, the log-probabilities of the
first generated token's most likely alternatives when the backend gives them (``top_logprobs``), and
token usage. ``complete_many`` answers a list of requests; clients decide how (the local client
batches them through ``generate``, the HTTP client sends them concurrently). Errors the caller should
record per item (a timeout, a garbage answer) are ``LLMError``; configuration errors are
``SaescopeError`` and stop the job.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Protocol

from saescope.errors import SaescopeError


class LLMError(SaescopeError):
    """One request failed after its retries (recorded per item; the job goes on)."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make."""

    messages: tuple[tuple[str, str], ...]
    """``(role, content)`` pairs."""
    max_tokens: int = 64
    """Most tokens to generate."""
    temperature: float = 0.0
    """0: greedy."""
    top_logprobs: int = 0
    """How many alternatives of the first generated token to return with their log-probs (0: none)."""

    def key(self, model: str) -> str:
        """The cache key: a hash of the model and everything in the request."""
        payload = json.dumps([model, self.messages, self.max_tokens, self.temperature, self.top_logprobs])
        return hashlib.sha256(payload.encode()).hexdigest()

    def as_openai(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass
class Completion:
    """One answer."""

    text: str
    top_logprobs: dict[str, float] | None = None
    """First generated token's alternatives -> log-prob (``None`` when the backend gives none)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Completion:
        return cls(**json.loads(text))


@dataclass
class Usage:
    """Tokens and requests so far, thread-safe; ``cost`` at the prices given (per million tokens)."""

    price_in: float = 0.0
    price_out: float = 0.0
    requests: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion | None) -> None:
        with self.lock:
            self.requests += 1
            if completion is None:
                self.failed += 1
            elif completion.cached:
                self.cached += 1
            else:
                self.prompt_tokens += completion.prompt_tokens
                self.completion_tokens += completion.completion_tokens

    @property
    def cost(self) -> float:
        return (self.prompt_tokens * self.price_in + self.completion_tokens * self.price_out) / 1e6

    def summary(self) -> dict[str, float | int]:
        return {"requests": self.requests, "cached": self.cached, "failed": self.failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": round(self.cost, 6)}


class LLMClient(Protocol):
    """What explainers and scorers call."""

    model: str
    """The model's name (part of the cache key)."""

    def complete_many(self, requests: list[ChatRequest]) -> list[Completion | LLMError]:
        """One answer or one ``LLMError`` per request, in order."""
        ...


def yes_no_margin(completion: Completion) -> float | None:
    """log P(yes) - log P(no) from the first token's alternatives, else ±inf from the text, else ``None``."""
    if completion.top_logprobs:
        yes = [v for k, v in completion.top_logprobs.items() if k.strip().lower() == "yes"]
        no = [v for k, v in completion.top_logprobs.items() if k.strip().lower() == "no"]
        if yes or no:
            floor = min(completion.top_logprobs.values()) - 1.0  # an answer outside the top list is below all of them
            return _logsumexp(yes or [floor]) - _logsumexp(no or [floor])
    word = completion.text.strip().lower()
    if word.startswith("yes"):
        return math.inf
    if word.startswith("no"):
        return -math.inf
    return None


def expected_digit(completion: Completion) -> float | None:
    """The expected value of a 0-9 answer from the first token's alternatives, else the first digit in the
    text, else ``None``."""
    if completion.top_logprobs:
        digits = {int(k.strip()): v for k, v in completion.top_logprobs.items() if k.strip().isdigit() and len(k.strip()) == 1}
        if digits:
            top = max(digits.values())
            weights = {d: math.exp(v - top) for d, v in digits.items()}
            return sum(d * w for d, w in weights.items()) / sum(weights.values())
    for char in completion.text:
        if char.isdigit():
            return float(char)
    return None


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
