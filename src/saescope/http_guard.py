"""What every saescope HTTP server (``saescope app``, ``saescope serve-llm``) checks before a request runs.

- **Host header (DNS rebinding).** A web page on another site can make a browser send requests to a
  loopback server through a name it controls (``attacker.example`` resolving to 127.0.0.1). The browser
  then sends that name in ``Host``. So the servers answer only requests whose ``Host`` is a loopback
  name (``localhost``, ``127.0.0.1``, ``[::1]``, any port), the address they are bound to, or a name
  given with ``--allowed-hosts`` (e.g. the machine's DNS name when serving a lab with a token). Anything
  else gets 421 (Misdirected Request) and nothing runs.
- **Body size.** A request body over ``max_body_bytes`` is refused with 413 before it is read whole.

Both are one ASGI middleware (``GuardMiddleware``), so they run before routing, validation and the
model queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def host_name(header: str) -> str:
    """``"[::1]:8000"`` -> ``"::1"``; ``"LocalHost:80"`` -> ``"localhost"``; ``"a.b"`` -> ``"a.b"``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` names a server bound to ``bind`` answers: loopback, ``bind`` (unless it is a
    wildcard address), and ``extra``."""
    names = set(LOOPBACK_HOSTS) | {host_name(h) for h in extra if h.strip()}
    if bind not in ("0.0.0.0", "::", ""):
        names.add(host_name(bind))
    return frozenset(names)


class GuardMiddleware:
    """ASGI middleware: refuse other ``Host`` names (421) and bodies over ``max_body_bytes`` (413)."""

    def __init__(self, app: Any, hosts: frozenset[str], max_body_bytes: int | None = None,
                 error: Any = None) -> None:
        self.app, self.hosts, self.max_body_bytes = app, hosts, max_body_bytes
        self.error = error or (lambda status, message: {"detail": message})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan; neither server speaks websockets
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = host_name(headers.get("host", ""))
        if host not in self.hosts:
            return await self._refuse(send, 421, f"host {host or '(none)'!r} is not served here: use 127.0.0.1 or "
                                                 "localhost (or start the server with --allowed-hosts)")
        if self.max_body_bytes is not None:
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                return await self._refuse(send, 413, f"the request body is larger than {self.max_body_bytes} bytes")
            receive = self._bounded(receive)
        try:
            await self.app(scope, receive, send)
        except _TooLarge:
            await self._refuse(send, 413, f"the request body is larger than {self.max_body_bytes} bytes")

    def _bounded(self, receive: Any) -> Any:
        seen = 0

        async def bounded() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:  # a chunked body with no Content-Length
                raise _TooLarge
            return message
        return bounded

    async def _refuse(self, send: Any, status: int, message: str) -> None:
        body = json.dumps(self.error(status, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
