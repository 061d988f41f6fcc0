"""Any OpenAI-compatible server as an explainer/scorer: OpenAI, vLLM, llama.cpp server, Ollama, LM Studio,
or ``saescope serve-llm``, through the official ``openai`` client.

Decisions:
- The API key is read from an environment variable (``api_key_env``, default ``OPENAI_API_KEY``), never
  from a flag or a file. A server on a loopback address may run without one.
- Requests go out ``concurrency`` at a time (threads), spaced to at most ``requests_per_minute``; each is
  retried ``retries`` times with exponential backoff (1, 2, 4 ... s) on connection errors, time-outs,
  429 and 5xx answers; a request that still fails becomes an ``LLMError`` for its item alone.
- ``check()`` lists the server's models first, so an unreachable server or an unknown model is one
  error before any work starts.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from saescope.autointerp.llm.protocol import ChatRequest, Completion, LLMError
from saescope.errors import SaescopeError
from saescope.http_guard import LOOPBACK_HOSTS


def api_key(base_url: str | None, env: str = "OPENAI_API_KEY") -> str:
    """The key from ``$env``; a placeholder for loopback servers that need none; else a clear error."""
    key = os.environ.get(env)
    if key:
        return key
    if base_url and urlparse(base_url).hostname in LOOPBACK_HOSTS:
        return "not-needed"
    raise SaescopeError(f"no API key: set the environment variable {env} (keys are never read from flags or files)")


class _Spacing:
    """At most ``per_minute`` starts per minute across threads (0: no limit)."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


class OpenAIChatClient:
    """``LLMClient`` over an OpenAI-compatible HTTP server. Example::

        client = OpenAIChatClient("http://127.0.0.1:8011/v1", "SmolLM2-135M-Instruct")
        client.check()
    """

    def __init__(self, base_url: str | None, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout: float = 60.0, retries: int = 3, requests_per_minute: float = 0.0) -> None:
        try:
            import openai
        except ImportError:
            raise SaescopeError("the HTTP explainer needs the openai package: pip install 'saescope[app]'") from None
        self.openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key(base_url, api_key_env), timeout=timeout,
                                    max_retries=0)
        self.base_url = base_url or "https://api.openai.com/v1"
        self.model, self.concurrency, self.retries = model, concurrency, retries
        self.spacing = _Spacing(requests_per_minute)

    def check(self) -> None:
        """Raise a one-line ``SaescopeError`` unless the server answers and serves ``model``."""
        try:
            names = [m.id for m in self.client.models.list()]
        except self.openai.AuthenticationError:
            raise SaescopeError(f"{self.base_url} refused the API key (HTTP 401)") from None
        except (self.openai.APIError, ValueError) as exc:
            raise SaescopeError(f"cannot reach an OpenAI-compatible server at {self.base_url}: "
                                f"{type(exc).__name__}") from None
        if self.model not in names:
            raise SaescopeError(f"{self.base_url} does not serve {self.model!r}; it serves: {', '.join(names) or 'nothing'}")

    def complete_many(self, requests: list[ChatRequest]) -> list[Completion | LLMError]:
        """Sent shortest first, so requests in flight together have similar lengths (a batching server
        pads less); answers come back in the order asked."""
        order = sorted(range(len(requests)), key=lambda i: sum(len(c) for _, c in requests[i].messages))
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="saescope-llm") as pool:
            answers = list(pool.map(self._one_or_error, [requests[i] for i in order]))
        out: list[Completion | LLMError] = [LLMError("not sent")] * len(requests)
        for i, answer in zip(order, answers):
            out[i] = answer
        return out

    def _one_or_error(self, request: ChatRequest) -> Completion | LLMError:
        try:
            return self._one(request)
        except LLMError as exc:
            return exc

    def _one(self, request: ChatRequest) -> Completion:
        retryable = (self.openai.APIConnectionError, self.openai.APITimeoutError, self.openai.RateLimitError,
                     self.openai.InternalServerError)
        for attempt in range(self.retries + 1):
            self.spacing.wait()
            try:
                extra = {"logprobs": True, "top_logprobs": request.top_logprobs} if request.top_logprobs else {}
                response = self.client.chat.completions.create(
                    model=self.model, messages=request.as_openai(), max_tokens=request.max_tokens,
                    temperature=request.temperature, **extra)
                return _completion(response)
            except retryable as exc:
                if attempt == self.retries:
                    raise LLMError(f"{self.base_url}: {type(exc).__name__} after {self.retries + 1} attempts") from None
                time.sleep(2.0 ** attempt)
            except self.openai.APIError as exc:
                raise LLMError(f"{self.base_url}: {type(exc).__name__}: {str(exc)[:120]}") from None
        raise AssertionError("unreachable")


def _completion(response: object) -> Completion:
    """A ``Completion`` from a chat-completions response, or ``LLMError`` when it is not one."""
    try:
        choice = response.choices[0]
        text = choice.message.content or ""
        top = None
        if choice.logprobs is not None and choice.logprobs.content:
            top = {alt.token: float(alt.logprob) for alt in choice.logprobs.content[0].top_logprobs}
        usage = response.usage
        return Completion(text, top, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise LLMError(f"the server's answer is not a chat completion ({type(exc).__name__})") from None
