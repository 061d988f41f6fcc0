"""``AppConfig``: binding and per-request limits of ``saescope app`` (the CLI builds its options from it)."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.errors import SaescopeError


@dataclass
class AppConfig:
    """The web app's settings."""

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback requires a token."""
    port: int = 8000
    """Port."""
    max_new_tokens: int = 64
    """Most tokens a steering request may generate."""
    max_features: int = 8
    """Most feature edits in one steering request."""
    max_prompt_chars: int = 2000
    """Longest prompt or search text, in characters."""
    max_coefficient: float = 1000.0
    """Largest absolute steering value."""
    queue_size: int = 4
    """Model jobs that may wait; more get 503 with Retry-After."""
    timeout: float = 120.0
    """Seconds a model job may take before the request gets 504."""
    device: str = "cpu"
    """Device of the model."""
    dtype: str = "auto"
    """Precision of the model."""
    workers: int = 0
    """Server processes (0: one per core, at most 2). Each loads the RUNs, and the model when it first steers."""
    allowed_hosts: str = ""
    """Host names the app answers besides loopback and the bound address, comma-separated (others get 421)."""

    @property
    def allowed_host_names(self) -> list[str]:
        return [h.strip() for h in self.allowed_hosts.split(",") if h.strip()]

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SaescopeError(f"port must be 1-65535, got {self.port}")
        if self.workers < 0:
            raise SaescopeError(f"workers must be 0 (automatic) or positive, got {self.workers}")
        for name in ("max_new_tokens", "max_features", "max_prompt_chars", "queue_size"):
            if getattr(self, name) <= 0:
                raise SaescopeError(f"{name} must be positive, got {getattr(self, name)}")
