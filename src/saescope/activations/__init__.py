"""Activations: read a hook point's activations from texts (``text``, the one door) or token windows
(``read``: attention sinks), stream them to a trainer (``stream``), cache them on disk (``cache``, in
the ``layout`` both writers and readers import) and read a cache back window by window (``windows``).

Between ``model/`` (hooks, forward passes) and ``sae/`` (dictionaries trained on what this streams).
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"text_activations": "text", "hook_activations": "read", "hooks_activations": "read",
            "sink_mask": "read", "cache_activations": "cache", "CachedWindows": "windows"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.activations", {k: f"saescope.activations.{m}" for k, m in _EXPORTS.items()})
