"""A cache of the plain model's bias scores, so ``debias`` and repeated ``bias eval --intervention``
runs only score the intervened model.

Key: the model (name, dtype, device type and a hash of a sample of every weight), the benchmark data
(a hash of its content), the scoring settings (batch size) and the code (``saescope`` version and
``SCORING_VERSION``, bumped whenever a benchmark's definition changes). Entries are JSON files in
``$SAESCOPE_HOME/cache/bias/``, written atomically; an unreadable entry is scored again.

The CE/KL side effects need the plain model's full next-token distributions on the held-out windows
(~8k tokens x 49k vocabulary: too big to keep). What is kept instead is the plain model's last hidden
state there (``{key}.hidden.safetensors``, ~19 MB in float32): the LM head turns it back into the same
logits for ~1/5 of a forward pass. Key: the model fingerprint, the windows' token ids and the code.

The intervened model's passes skip the blocks below the intervention (``model.prefix_replay``); the
plain model's inputs of that block are kept per model and layer (``{model}-{version}-L{layer}.prefix.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from saescope.bias.benchmarks import OccupationScores, TwinScores
from saescope.bias.data import BiasData
from saescope.model.fingerprint import model_fingerprint
from saescope.model.loading import LoadedModel
from saescope.storage import saescope_home, write_json
from saescope.version import __version__

SCORING_VERSION = 1


def data_fingerprint(data: BiasData) -> str:
    payload = {k: v for k, v in asdict(data).items() if k != "sources"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_key(lm: LoadedModel, data: BiasData, batch_size: int, model_key: str | None = None) -> str:
    """The scores' key; pass ``model_key`` (``model_fingerprint(lm)``) when it is already computed."""
    text = f"{model_key or model_fingerprint(lm)}|{data_fingerprint(data)}|{batch_size}|{__version__}|{SCORING_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def hidden_key(model_key: str, windows: torch.Tensor) -> str:
    """The key of the plain model's last hidden states on these token windows."""
    digest = hashlib.sha256(f"{model_key}|{__version__}|{SCORING_VERSION}|{tuple(windows.shape)}".encode())
    digest.update(windows.cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def load_hidden(key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached hidden states when the file is there, readable and of ``shape``; else ``None``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        hidden = load_file(_path(key).with_suffix(".hidden.safetensors"))["hidden"]
    except (OSError, SafetensorError, KeyError):
        return None
    return hidden if tuple(hidden.shape) == tuple(shape) and bool(hidden.isfinite().all()) else None


def save_hidden(key: str, hidden: torch.Tensor) -> None:
    """Store the hidden states atomically; an unwritable cache only costs a forward pass next time."""
    from safetensors.torch import save_file

    from saescope.errors import SaescopeError
    from saescope.storage import atomic_path

    try:
        with atomic_path(_path(key).with_suffix(".hidden.safetensors")) as tmp:
            save_file({"hidden": hidden.contiguous()}, str(tmp))
    except (OSError, SaescopeError):
        pass


def prefix_path(model_key: str, layer: int) -> Path:
    """Where the plain model's inputs of block ``layer`` on the benchmarks are kept
    (``model.prefix_replay``; ~110 MB in float32 for the embedded model)."""
    return saescope_home() / "cache" / "bias" / f"{model_key}-{__version__}-L{layer}.prefix.safetensors"


def _path(key: str) -> Path:
    return saescope_home() / "cache" / "bias" / f"{key}.json"


def load_base(key: str) -> dict | None:
    """The cached benchmark scores (``asdict`` of ``BiasScores`` without ``ce_loss``), or ``None``."""
    try:
        raw = json.loads(_path(key).read_text())
        raw["occupations"] = OccupationScores(**raw["occupations"])
        raw["winobias"], raw["crows"] = TwinScores(**raw["winobias"]), TwinScores(**raw["crows"])
        return raw
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_base(key: str, scores: dict) -> None:
    """Store the scores; an unwritable cache only costs scoring again next time."""
    from saescope.errors import SaescopeError

    try:
        write_json(_path(key), {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in scores.items()})
    except (OSError, SaescopeError):
        pass
