"""What every command shares: the rich console, JSON output, and loading model + SAE from options."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
from rich.console import Console

from saescope.errors import SaescopeError

console = Console(stderr=False, highlight=False)


def print_json(obj: Any) -> None:
    """Print ``obj`` as one JSON document on stdout (numpy values become Python ones, NaN/inf null)."""
    sys.stdout.write(json.dumps(_plain(obj), indent=2) + "\n")


def plain(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones and NaN/inf as None (JSON-ready)."""
    return _plain(obj)


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def load_model_and_sae(sae_path: str, model: str | None, hook: str | None, device: str, dtype: str | None):
    """Load the SAE, then the model it was trained on (unless ``model`` says otherwise), and check they fit.

    Returns ``(lm, sae, hook_name)``.
    """
    from saescope.models import EMBEDDED_MODEL, load_model
    from saescope.sae_io import load_sae

    sae = load_sae(sae_path, device=device)
    if (hook or sae.cfg.hook_name) is None:
        raise SaescopeError(f"the SAE at {sae_path!r} does not name its hook point: pass --hook")
    model_name = model or (None if sae.cfg.model_name in (None, EMBEDDED_MODEL) else sae.cfg.model_name)
    lm = load_model(model_name, device=device, dtype=dtype)
    return lm, sae, lm.check_sae(sae, hook)
