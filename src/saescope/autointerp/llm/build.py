"""Build the client a command asks for: ``local`` (a Hugging Face chat model) or ``openai`` (HTTP), with the cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saescope.autointerp.llm.cache import CachedClient
from saescope.autointerp.llm.protocol import Usage
from saescope.errors import SaescopeError


@dataclass
class ClientConfig:
    """Which LLM explains and scores (``saescope explain`` / ``score`` build their options from it)."""

    explainer: str = "local"
    """'local' (a Hugging Face chat model), 'openai' (any OpenAI-compatible server) or 'none' (top-token baseline)."""
    explainer_model: str = "default"
    """local: 'default' (the embedded model), a hub id or a folder; openai: the served model's name."""
    base_url: str | None = None
    """openai: the server, e.g. http://127.0.0.1:8011/v1 (default: api.openai.com)."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: the environment variable holding the key."""
    concurrency: int = 8
    """openai: requests in flight; local: prompts per batch."""
    timeout: float = 60.0
    """openai: seconds per request."""
    requests_per_minute: float = 0.0
    """openai: rate limit (0: none)."""
    price_in: float = 0.0
    """Cost per million prompt tokens (for the usage log)."""
    price_out: float = 0.0
    """Cost per million completion tokens."""
    cache: Path | None = None
    """Answer cache (SQLite); default $SAESCOPE_HOME/cache/llm.sqlite."""
    device: str = "cpu"
    """local: device."""
    dtype: str = "auto"
    """local: dtype."""

    def __post_init__(self) -> None:
        if self.explainer not in ("local", "openai", "none"):
            raise SaescopeError(f"unknown explainer {self.explainer!r}: use local, openai or none")
        if self.concurrency <= 0 or self.timeout <= 0:
            raise SaescopeError("concurrency and timeout must be positive")


def make_client(config: ClientConfig) -> CachedClient | None:
    """The cached client ``config`` names (``None`` for 'none'); an HTTP server is checked before any work."""
    usage = Usage(config.price_in, config.price_out)
    if config.explainer == "none":
        return None
    if config.explainer == "openai":
        from saescope.autointerp.llm.http import OpenAIChatClient

        if config.explainer_model == "default":
            raise SaescopeError("with --explainer openai, name the served model with --explainer-model")
        inner = OpenAIChatClient(config.base_url, config.explainer_model, config.api_key_env, config.concurrency,
                                 config.timeout, requests_per_minute=config.requests_per_minute)
        inner.check()
    else:
        from saescope.autointerp.llm.local import LocalChatClient
        from saescope.model.loading import load_model

        inner = LocalChatClient(load_model(config.explainer_model, config.device, config.dtype), config.concurrency)
    return CachedClient(inner, config.cache, usage)
