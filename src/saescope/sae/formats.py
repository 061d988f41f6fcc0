"""Save and load SAEs: the SAELens on-disk format (both ways) and dictionary_learning ``ae.pt`` files.

SAELens folder: ``cfg.json`` + ``sae_weights.safetensors``. Architectures map as SAELens
``standard`` <-> ``relu``, ``topk`` <-> ``topk``, ``jumprelu`` <-> ``jumprelu``; a ``batchtopk`` SAE
is written as ``jumprelu`` with its learned threshold (what SAELens itself does) and remembers it
was batchtopk in ``metadata.saescope``. Nothing is ever unpickled: safetensors, or
``torch.load(weights_only=True)`` for dictionary_learning files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from saescope.errors import SaescopeError
from saescope.resources import data_path
from saescope.sae.core import SAE, SAEConfig, build_sae
from saescope.sae.pretrained import fetch_pretrained, load_npz_params
from saescope.storage import atomic_path, read_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": None}


def default_sae_path(hook: str | None = None) -> Path:
    """The folder of the SAE bundled inside the package, or of the shipped suite's SAE at ``hook``."""
    if hook is None or hook == "blocks.12.hook_resid_post":
        return data_path("sae", "default")
    return data_path("sae", "suite", hook)


def save_sae(sae: SAE, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``sae`` to ``folder`` in the SAELens format, atomically. Returns the folder.

    ``dtype=torch.bfloat16`` halves the file (SAELens reads the ``dtype`` field; saescope loads any
    precision as float32).

    Example::

        save_sae(sae, "my_sae")           # then sae_lens.SAE.load_from_disk("my_sae") works too
    """
    cfg = sae.cfg
    if cfg.skip:
        raise SaescopeError("a skip transcoder is saved as a transcoder set (TranscoderSet.save), not as an SAELens SAE")
    saelens_cfg: dict[str, Any] = {
        "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": str(dtype).removeprefix("torch."), "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": cfg.hook_name, "model_name": cfg.model_name,
                     "saescope": {"activation": cfg.activation, "k": cfg.k, **cfg.metadata}},
        "architecture": _TO_SAELENS[cfg.activation],
    }
    if cfg.activation == "topk":
        saelens_cfg.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    tensors = {name: p.detach().to("cpu", dtype).contiguous()
               for name, p in sae.named_parameters()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(folder / CFG_FILE) as tmp:
        tmp.write_text(json.dumps(saelens_cfg, indent=2) + "\n")
    return folder


def load_sae(path: str | Path = "default", device: str = "cpu", activation: str | None = None) -> SAE:
    """Load an SAE from ``"default"`` (the bundled one), a SAELens folder, a dictionary_learning
    ``ae.pt`` file (or its folder), or one layer of a transcoder set (``DIR/layer_3.safetensors``,
    ``sae.transcoders``). ``activation`` overrides the guess for ae.pt files ("batchtopk").

    Example::

        sae = load_sae("default")
        sae.cfg.hook_name       # 'blocks.12.hook_resid_post'
        load_sae("default/blocks.6.hook_resid_post")    # an SAE of the shipped suite (saescope.sae.suite)
        load_sae("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")   # by name (sae.pretrained)
    """
    folder = _shipped_folder(str(path)) or Path(path).expanduser()
    facts: dict[str, Any] = {}
    if not folder.exists():
        if isinstance(path, Path) or str(path).startswith((".", "/", "~")) or "/" not in str(path):
            raise SaescopeError(f"SAE path {str(path)!r} does not exist")
        folder, facts = fetch_pretrained(str(path))  # RELEASE/SAE_ID or hf:OWNER/REPO/FOLDER (sae.pretrained)
    from saescope.sae.transcoders import is_transcoder_set, load_layer

    if folder.is_file() and folder.suffix == ".safetensors" and is_transcoder_set(folder.parent):
        sae = load_layer(folder)
    elif folder.is_dir() and is_transcoder_set(folder):
        raise SaescopeError(f"{folder} is a transcoder set: name one layer ({folder}/layer_0.safetensors) "
                            "or load the set with load_transcoders")
    elif folder.is_dir() and (folder / CFG_FILE).exists():
        sae = _load_saelens(folder)
    elif folder.is_dir() and (folder / "params.npz").exists():
        sae = load_npz_params(folder / "params.npz", facts.get("hook_name"), facts.get("model"))
    elif folder.suffix == ".pt" or (folder / "ae.pt").exists():
        sae = _load_dictionary_learning(folder if folder.suffix == ".pt" else folder / "ae.pt", activation)
    else:
        raise SaescopeError(f"{folder} is not an SAE: expected cfg.json + {WEIGHTS_FILE} (SAELens) or ae.pt")
    sae.cfg.metadata["source"] = str(path)
    return sae.to(device).eval().requires_grad_(False)


def _shipped_folder(name: str) -> Path | None:
    if name == "default":
        return default_sae_path()
    if not name.startswith("default/"):
        return None
    folder = default_sae_path(name.removeprefix("default/"))
    if not folder.exists():
        from saescope.sae.suite_config import SHIPPED_LAYERS

        shipped = ", ".join(f"default/blocks.{layer}.hook_resid_post" for layer in SHIPPED_LAYERS)
        raise SaescopeError(f"no shipped SAE {name!r}: the shipped ones are {shipped}")
    return folder


def _field(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], file: Path, required: bool = False,
           positive: bool = False) -> Any:
    """``raw[key]`` checked to be of ``kind`` (``None`` when absent and not required)."""
    value = raw.get(key)
    if value is None:
        if required:
            raise SaescopeError(f"{file}: field {key!r} is missing (a SAELens cfg.json needs d_in and d_sae)")
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
    if wrong or (positive and value <= 0):
        names = " or ".join(k.__name__ for k in kinds)
        raise SaescopeError(f"{file}: field {key!r} must be a {'positive ' if positive else ''}{names}, "
                            f"got {value!r} (fix the file)")
    return value


def _load_saelens(folder: Path) -> SAE:
    file = folder / CFG_FILE
    raw = read_json(file, "SAE config")
    if not isinstance(raw, dict):
        raise SaescopeError(f"{file}: expected a JSON object (a SAELens cfg.json)")
    d_in = _field(raw, "d_in", int, file, required=True, positive=True)
    d_sae = _field(raw, "d_sae", int, file, required=True, positive=True)
    metadata = _field(raw, "metadata", dict, file) or {}
    ours = _field(metadata, "saescope", dict, file) or {}
    for key in ("hook_name", "model_name"):
        _field(metadata, key, str, file)
        _field(raw, key, str, file)
    _field(raw, "architecture", str, file)
    _field(raw, "apply_b_dec_to_input", bool, file)
    arch = raw.get("architecture", "standard")
    activation = ours.get("activation") or _FROM_SAELENS.get(arch)
    if activation is None:
        raise SaescopeError(f"SAELens architecture {arch!r} in {folder} is not supported "
                            "(supported: standard, topk, jumprelu)")
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise SaescopeError(f"{folder}: normalize_activations={raw['normalize_activations']!r} is not supported; "
                            "fold the scaling factor into the weights first")
    k = ours.get("k") or raw.get("k") or (_field(raw, "activation_fn_kwargs", dict, file) or {}).get("k")
    if k is not None:
        _field({"k": k}, "k", int, file, positive=True)
    extra = {key: value for key, value in ours.items() if key not in ("activation", "k")}
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation, k=k,
                    hook_name=metadata.get("hook_name") or raw.get("hook_name"),
                    model_name=metadata.get("model_name") or raw.get("model_name"),
                    apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)), metadata=extra)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise SaescopeError(f"cannot read {folder / WEIGHTS_FILE}: corrupt or truncated ({exc})") from None
    sae = build_sae(cfg, tensors, str(folder / WEIGHTS_FILE))
    if raw.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norm(sae)
    return sae


@torch.no_grad()
def _fold_decoder_norm(sae: SAE) -> None:
    """SAELens ``rescale_acts_by_decoder_norm``: fold the decoder norms in (same outputs, unit rows)."""
    norms = sae.W_dec.norm(dim=-1)  # [d_sae]
    sae.W_enc.mul_(norms)
    sae.b_enc.mul_(norms)
    sae.W_dec.div_(norms[:, None])
    if sae.threshold is not None:
        sae.threshold.mul_(norms)


def _load_dictionary_learning(file: Path, activation: str | None) -> SAE:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise SaescopeError(f"cannot read {file} as a weights-only torch file ({type(exc).__name__})") from None
    config_file = file.parent / "config.json"
    info = read_json(config_file, "dictionary_learning config").get("trainer", {}) if config_file.exists() else {}
    hook = f"blocks.{info['layer']}.hook_resid_post" if isinstance(info.get("layer"), int) else None
    if not isinstance(state, dict) or not ({"W_enc"} <= state.keys() or {"encoder.weight", "decoder.weight"} <= state.keys()):
        raise SaescopeError(f"{file} is not a dictionary_learning SAE: expected W_enc, or encoder.weight and "
                            "decoder.weight")
    if "W_enc" in state:  # JumpReluAutoEncoder: no b_dec subtraction before encoding
        d_in, d_sae = state["W_enc"].shape
        cfg = SAEConfig(d_in, d_sae, "jumprelu", hook_name=hook, apply_b_dec_to_input=False)
        return build_sae(cfg, {k: state[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}, str(file))
    d_sae, d_in = state["encoder.weight"].shape
    tensors = {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
               "W_dec": state["decoder.weight"].T, "b_dec": state.get("b_dec", state.get("bias"))}
    if "k" in state:
        act = activation or "topk"
        cfg = SAEConfig(d_in, d_sae, act, k=int(state["k"]), hook_name=hook)
        if act == "batchtopk":
            tensors["threshold"] = torch.full((d_sae,), float(state["threshold"]))
    else:
        cfg = SAEConfig(d_in, d_sae, "relu", hook_name=hook)
    return build_sae(cfg, tensors, str(file))
