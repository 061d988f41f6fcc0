"""Pretrained SAEs by name: SAELens release names and Hugging Face repo ids, online or from the local HF cache.

``load_sae(NAME)`` falls back to this module when ``NAME`` is not a local path:

- ``RELEASE/SAE_ID`` (``gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical``): looked up in a
  SAELens-style registry (release -> ``repo_id`` + per-SAE ``path``). The registries read are the YAML
  file named by ``$SAESCOPE_SAE_REGISTRY`` (same shape as SAELens's ``pretrained_saes.yaml``), then the
  ``pretrained_saes.yaml`` that the ``sae-lens`` package ships when it is installed. We do not ship a copy:
  it is 1.5 MB and changes with every SAELens release; installing ``sae-lens`` keeps it current.
- ``hf:OWNER/REPO[/SUBFOLDER]``: an SAE folder in any hub repo.

Files are fetched with ``huggingface_hub.snapshot_download`` restricted to the SAE's folder. With
``HF_HUB_OFFLINE=1`` (the default of the ``saescope`` command) they come from the local HF cache only, and
a name that is not cached is a one-line error that says so. Folders may hold the SAELens layout
(``cfg.json`` + ``sae_weights.safetensors``) or Gemma Scope's ``params.npz`` (JumpReLU, read with
``numpy.load(allow_pickle=False)``).
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import torch

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig

REGISTRY_ENV = "SAESCOPE_SAE_REGISTRY"


def _read_registry(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SaescopeError(f"SAE registry {path} is unreadable ({type(exc).__name__}): fix or unset ${REGISTRY_ENV}") from None
    if not isinstance(data, dict):
        raise SaescopeError(f"SAE registry {path}: expected a mapping of release names")
    for release, entry in data.items():
        saes = entry.get("saes", []) if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or not isinstance(entry.get("repo_id"), str) or not isinstance(saes, list)
                or not all(isinstance(sae, dict) and "id" in sae for sae in saes)):
            raise SaescopeError(f"SAE registry {path}: release {release!r} must be a mapping with repo_id (text) and "
                                f"saes (a list of mappings with id): fix or unset ${REGISTRY_ENV}")
    return data


@cache
def _saelens_registry() -> dict[str, Any]:
    try:
        from importlib.resources import files

        path = Path(str(files("sae_lens") / "pretrained_saes.yaml"))
    except (ImportError, ModuleNotFoundError, TypeError):
        return {}
    return _read_registry(path) if path.is_file() else {}


def registries() -> dict[str, Any]:
    """Every known release (the user's registry first, then SAELens's)."""
    user = os.environ.get(REGISTRY_ENV)
    mine = _read_registry(Path(user)) if user else {}
    return {**_saelens_registry(), **mine}


def parse_name(name: str) -> tuple[str, str, dict[str, Any]] | None:
    """``(repo_id, folder in the repo, registry facts)`` for a pretrained SAE name, or ``None`` if it is not one."""
    if name.startswith("hf:"):
        parts = name[3:].strip("/").split("/")
        if len(parts) < 2 or not all(parts[:2]):
            raise SaescopeError(f"{name!r}: write hf:OWNER/REPO or hf:OWNER/REPO/FOLDER")
        return "/".join(parts[:2]), "/".join(parts[2:]), {}
    release, _, sae_id = name.partition("/")
    known = registries()
    if release not in known:
        return None
    entry = known[release]
    for sae in entry.get("saes", []):
        if sae.get("id") == sae_id:
            facts = {"release": release, "model": entry.get("model"), **sae}
            return str(entry["repo_id"]), str(sae.get("path", sae_id)), facts
    ids = [s.get("id") for s in entry.get("saes", [])]
    raise SaescopeError(f"release {release!r} has no SAE {sae_id!r}; it has {len(ids)}, e.g. {', '.join(map(str, ids[:5]))}")


def fetch_pretrained(name: str) -> tuple[Path, dict[str, Any]]:
    """The local folder of the pretrained SAE ``name`` (downloaded, or from the HF cache offline)."""
    parsed = parse_name(name)
    if parsed is None:
        raise SaescopeError(f"SAE {name!r} is neither a folder nor a known name: give a path, 'default', "
                            f"RELEASE/SAE_ID (registry: ${REGISTRY_ENV} or the sae-lens package), or hf:OWNER/REPO/FOLDER")
    repo_id, folder, facts = parsed
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = [f"{folder}/*"] if folder else None
    try:
        root = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise SaescopeError(f"SAE {name!r} ({repo_id}/{folder}) is not in the local Hugging Face cache and the hub "
                            "is offline: download it once with HF_HUB_OFFLINE=0") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise SaescopeError(f"cannot fetch SAE {name!r} from {repo_id}: {exc}") from None
    path = root / folder if folder else root
    if not path.is_dir() or not any(path.iterdir()):
        raise SaescopeError(f"{repo_id} has no files under {folder!r} (SAE {name!r})")
    return path, facts


def hook_from_path(folder: str) -> str | None:
    """``blocks.L.hook_resid_post`` from a Gemma Scope-style folder name (``layer_12/width_16k/...``)."""
    match = re.search(r"layer_(\d+)", folder)
    return f"blocks.{match.group(1)}.hook_resid_post" if match else None


def load_npz_params(file: Path, hook_name: str | None = None, model_name: str | None = None) -> SAE:
    """A JumpReLU SAE from Gemma Scope's ``params.npz`` (W_enc [d_in, d_sae], W_dec, b_enc, b_dec, threshold)."""
    import numpy as np

    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {key: torch.from_numpy(np.asarray(data[key], dtype=np.float32)) for key in data.files}
    except (OSError, ValueError) as exc:
        raise SaescopeError(f"{file} is not a readable params.npz ({type(exc).__name__})") from None
    missing = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"} - set(arrays)
    if missing:
        raise SaescopeError(f"{file} lacks {', '.join(sorted(missing))}: not a JumpReLU params.npz")
    d_in, d_sae = arrays["W_enc"].shape
    if arrays["W_dec"].shape != (d_sae, d_in) or arrays["threshold"].shape != (d_sae,):
        raise SaescopeError(f"{file}: W_enc {tuple(arrays['W_enc'].shape)} does not fit W_dec "
                            f"{tuple(arrays['W_dec'].shape)} / threshold {tuple(arrays['threshold'].shape)}")
    sae = SAE(SAEConfig(d_in, d_sae, "jumprelu", hook_name=hook_name or hook_from_path(str(file.parent)),
                        model_name=model_name, apply_b_dec_to_input=False))  # Gemma Scope encodes x, not x - b_dec
    with torch.no_grad():
        for key, value in arrays.items():
            if hasattr(sae, key):
                getattr(sae, key).copy_(value)
    return sae
