"""``saescope serve-llm``: an OpenAI-compatible endpoint (``/v1/chat/completions``, ``/v1/models``) for a local model.

So a lab can share one explainer, and so the HTTP client is tested end to end against a real server.
Decisions:
- One worker thread owns the model. Requests wait in a bounded queue; the worker takes up to
  ``batch_size`` of them at once (waiting ``gather_ms`` for more after the first) and answers them with one
  batched ``LocalChatClient.complete_many``, so concurrent clients get batched generation, like vLLM's
  batching, and the event loop never blocks. A full queue answers 503 with ``Retry-After``.
- Bound to 127.0.0.1 unless told otherwise; with ``token`` set, every request needs
  ``Authorization: Bearer <token>``.
- No ``from __future__ import annotations`` here: FastAPI must see the request models of ``llm_app`` as classes.
- Every request is bounded before it reaches the model: the body (``MAX_BODY_BYTES``, 413), the number
  of messages (``MAX_MESSAGES``), the characters, and the prompt's tokens after the chat template
  (``max_prompt_tokens``, and never more than the model's context minus ``max_tokens``): 400 otherwise.
  The ``Host`` header must be loopback, the bound address or an allowed name (``saescope.http_guard``).
- Errors use OpenAI's shape ``{"error": {"message", "type"}}``; supported: ``n = 1``, no streaming,
  ``logprobs`` with up to 20 ``top_logprobs`` of the first generated token.
"""

import asyncio
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Literal

from saescope.autointerp.llm.local import LocalChatClient
from saescope.autointerp.llm.protocol import ChatRequest, Completion, LLMError
from saescope.errors import SaescopeError
from saescope.http_guard import LOOPBACK_HOSTS, GuardMiddleware
from saescope.http_guard import allowed_hosts as http_allowed_hosts

MAX_PROMPT_CHARS = 64_000
MAX_MESSAGES = 64
MAX_BODY_BYTES = 256 * 1024


class BatchingWorker:
    """Answers ``ChatRequest``s from a bounded queue in batches, on one thread."""

    def __init__(self, client: LocalChatClient, batch_size: int = 8, gather_ms: float = 50.0, queue_size: int = 64) -> None:
        self.client, self.batch_size, self.gather_s = client, batch_size, gather_ms / 1000
        self.queue: queue.Queue[tuple[ChatRequest, Future]] = queue.Queue(maxsize=queue_size)
        threading.Thread(target=self._run, name="saescope-llm-worker", daemon=True).start()

    def submit(self, request: ChatRequest) -> Future:
        """A future answer; ``queue.Full`` when the queue is full."""
        future: Future = Future()
        self.queue.put_nowait((request, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.batch_size:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                answers = self.client.complete_many([r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, never the worker
                answers = [LLMError(f"generation failed: {type(exc).__name__}: {exc}")] * len(batch)
            for (_, future), answer in zip(batch, answers):
                future.set_result(answer)


def _chat_body(token_limit: int) -> type:
    """The pydantic model of a chat-completions request (limits from the server's settings)."""
    from pydantic import BaseModel, Field

    class Message(BaseModel):
        role: Literal["system", "user", "assistant"]
        content: str

    class ChatBody(BaseModel):
        model: str
        messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
        max_tokens: int | None = Field(default=None, ge=1, le=token_limit)
        max_completion_tokens: int | None = Field(default=None, ge=1, le=token_limit)
        temperature: float = Field(default=1.0, ge=0.0, le=2.0)
        logprobs: bool | None = None
        top_logprobs: int | None = Field(default=None, ge=0, le=20)
        n: int = Field(default=1, ge=1, le=1)
        stream: Literal[False] = False

    return ChatBody


def _error(status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def llm_app(client: LocalChatClient, token: str | None = None, batch_size: int = 8, token_limit: int = 1024,
            queue_size: int = 64, max_prompt_tokens: int = 2048, host: str = "127.0.0.1",
            allowed_hosts: list[str] | tuple[str, ...] = ()):
    """The FastAPI application (``uvicorn.run(llm_app(...))``)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        raise SaescopeError("serve-llm needs FastAPI: pip install 'saescope[app]'") from None
    ChatBody = _chat_body(token_limit)

    worker = BatchingWorker(client, batch_size, queue_size=queue_size)
    app = FastAPI(title="saescope serve-llm", description="OpenAI-compatible chat completions for a local model.",
                  docs_url=None, redoc_url=None)
    app.add_middleware(GuardMiddleware, hosts=http_allowed_hosts(host, allowed_hosts), max_body_bytes=MAX_BODY_BYTES,
                       error=lambda status, message: {"error": {"message": message, "type": "invalid_request_error"}})
    context = int(getattr(client.lm.model.config, "max_position_embeddings", 0) or 1 << 30)

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if token and request.headers.get("authorization") != f"Bearer {token}":
            return _error(401, "missing or wrong bearer token", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> object:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, f"invalid request: {where}: {first.get('msg', 'malformed')}")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": client.model, "object": "model", "created": 0, "owned_by": "saescope"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody):
        if body.model != client.model:
            return _error(404, f"model {body.model!r} is not served here (serving {client.model!r})")
        if sum(len(m.content) for m in body.messages) > MAX_PROMPT_CHARS:
            return _error(400, f"the messages are longer than {MAX_PROMPT_CHARS} characters")
        request = ChatRequest(tuple((m.role, m.content) for m in body.messages),
                              max_tokens=body.max_completion_tokens or body.max_tokens or 256,
                              temperature=body.temperature, top_logprobs=(body.top_logprobs or 1) if body.logprobs else 0)
        limit = min(max_prompt_tokens, context - request.max_tokens)
        n_tokens = len(client.prompt_ids(request))
        if n_tokens > limit:
            return _error(400, f"the prompt is {n_tokens} tokens: at most {limit} are served here "
                               f"(max_prompt_tokens {max_prompt_tokens}, context {context} minus max_tokens)")
        try:
            future = worker.submit(request)
        except queue.Full:
            return _error(503, "the server is busy: retry later", "server_busy", {"Retry-After": "1"})
        answer = await asyncio.wrap_future(future)
        if isinstance(answer, LLMError):
            return _error(500, str(answer), "server_error")
        return _response(client.model, answer, request)

    return app


def _response(model: str, answer: Completion, request: ChatRequest) -> dict:
    logprobs = None
    if answer.top_logprobs:
        alternatives = [{"token": t, "logprob": v, "bytes": None} for t, v in answer.top_logprobs.items()]
        best = max(alternatives, key=lambda a: a["logprob"])
        logprobs = {"content": [{**best, "top_logprobs": alternatives}]}
    finish = "length" if answer.completion_tokens >= request.max_tokens else "stop"
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": finish,
                         "logprobs": logprobs}],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                      "total_tokens": answer.prompt_tokens + answer.completion_tokens}}


def serve_llm(client: LocalChatClient, host: str = "127.0.0.1", port: int = 8011, token: str | None = None,
              batch_size: int = 8, max_prompt_tokens: int = 2048, allowed_hosts: list[str] | tuple[str, ...] = ()) -> None:
    """Serve until Ctrl-C."""
    import uvicorn

    if host not in LOOPBACK_HOSTS and not token:
        raise SaescopeError(f"serving on {host} (not loopback) needs a token: set SAESCOPE_LLM_TOKEN")
    if max_prompt_tokens < 1:
        raise SaescopeError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}")
    uvicorn.run(llm_app(client, token, batch_size, max_prompt_tokens=max_prompt_tokens, host=host,
                        allowed_hosts=allowed_hosts), host=host, port=port, log_level="warning")
