"""Per-layer transcoders (MLP input → MLP output) as a set, in circuit-tracer's on-disk layout.

A transcoder is an ``SAE`` whose input is ``blocks.L.hook_mlp_in`` (what the MLP reads) and whose
decoder reconstructs ``blocks.L.hook_mlp_out`` (what the MLP writes): ``cfg.hook_name`` is the input
hook, ``cfg.metadata["output_hook"]`` the output one, and ``apply_b_dec_to_input`` is off (``b_dec``
is the output bias). A skip transcoder (Paulo, Shabalin & Belrose 2025, "Transcoders beat sparse
autoencoders for interpretability") adds a linear map of the input, ``W_skip``, to the output; in an
attribution graph that path is linear, so gradients pass through it as they do through the residual
stream (circuit-tracer does the same) and it makes no nodes.

**Folder** (what circuit-tracer's ``load_transcoder_set`` reads, ``model_kind: transcoder_set``)::

    config.yaml             model_name, model_kind, feature_input_hook: mlp.hook_in,
                            feature_output_hook: mlp.hook_out, scan, activation, k, transcoders: [paths]
    layer_<i>.safetensors   W_enc [d_transcoder, d_model] (circuit-tracer's orientation: our W_enc
                            transposed), W_dec [d_transcoder, d_model], b_enc, b_dec, and ``k`` (topk)
                            or ``activation_function.threshold`` (jumprelu, batchtopk), and for a
                            skip transcoder ``W_skip`` [d_model, d_model] (circuit-tracer's: output =
                            input @ W_skip.T, so our W_skip transposed)
    saescope.json           how the set was trained and measured (saescope's own record)

``load_sae("DIR/layer_3.safetensors")`` loads one layer as an SAE; ``load_transcoders(DIR)`` the set.

**The default set.** No transcoder set is published for the embedded model, and a useful one (~170 MB)
is too large for the package, so the name ``default`` means a set kept in the cache,
``$SAESCOPE_HOME/transcoders/<model>/default``: ``saescope transcoders train`` writes it there when no
``--out`` is given (the default recipe of ``TranscoderConfig``), and ``--transcoders default`` (the
default of ``graph attribute`` and ``bench_graphs``) reads it, or says in one line how to train it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig, build_sae
from saescope.storage import atomic_path, read_json, read_text, saescope_home, write_json

CONFIG_FILE = "config.yaml"
RECORD_FILE = "saescope.json"
INPUT_HOOK, OUTPUT_HOOK = "blocks.{layer}.hook_mlp_in", "blocks.{layer}.hook_mlp_out"


def make_transcoder(layer: int, d_model: int, d_transcoder: int, activation: str = "topk", k: int | None = 32,
                    model: str | None = None, skip: bool = False) -> SAE:
    """An untrained transcoder for ``layer`` (random unit decoder rows, encoder = decoder transposed, a zero
    skip connection when ``skip``)."""
    return SAE(SAEConfig(d_model, d_transcoder, activation, k if activation in ("topk", "batchtopk") else None,
                         hook_name=INPUT_HOOK.format(layer=layer), model_name=model, apply_b_dec_to_input=False,
                         skip=skip,
                         metadata={"kind": "transcoder", "layer": layer,
                                   "output_hook": OUTPUT_HOOK.format(layer=layer)}))


@dataclass
class TranscoderSet:
    """One transcoder per layer (layers 0 … n − 1, as circuit-tracer requires)."""

    transcoders: dict[int, SAE]
    model_name: str | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = sorted(self.transcoders)
        if not layers:
            raise SaescopeError("a transcoder set needs at least one layer")
        widths = {t.d_sae for t in self.transcoders.values()}
        if len(widths) > 1:
            raise SaescopeError(f"the transcoders have different widths {sorted(widths)}: a set has one width")
        if len({t.cfg.skip for t in self.transcoders.values()}) > 1:
            raise SaescopeError("some transcoders of the set have a skip connection and some do not")

    @property
    def skip(self) -> bool:
        """Whether the set's transcoders have a skip connection."""
        return self.transcoders[self.layers[0]].cfg.skip

    @property
    def layers(self) -> list[int]:
        return sorted(self.transcoders)

    def __getitem__(self, layer: int) -> SAE:
        if layer not in self.transcoders:
            raise SaescopeError(f"the transcoder set has no layer {layer} (it has {self.layers[0]}-{self.layers[-1]})")
        return self.transcoders[layer]

    def to(self, device: str | torch.device) -> TranscoderSet:
        for sae in self.transcoders.values():
            sae.to(device)
        return self

    def check_model(self, lm: Any) -> None:
        """A one-line error unless the set was trained for ``lm`` and every layer's hooks exist in it with the
        right width."""
        if self.model_name and lm.name and self.model_name != lm.name:
            raise SaescopeError(f"the transcoder set was trained on {self.model_name}, not {lm.name}")
        for layer in self.layers:
            lm.check_sae(self[layer])
            lm.check_sae(self[layer], OUTPUT_HOOK.format(layer=layer))

    def save(self, folder: str | Path) -> Path:
        """Write the set (module docstring); each file atomically, ``config.yaml`` last."""
        import yaml
        from safetensors.torch import save_file

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise SaescopeError(f"{folder} is a file: a transcoder set is a folder")
        folder.mkdir(parents=True, exist_ok=True)
        first = self[self.layers[0]]
        for layer in self.layers:
            sae = self[layer]
            tensors = {"W_enc": sae.W_enc.detach().T, "W_dec": sae.W_dec.detach(), "b_enc": sae.b_enc.detach(),
                       "b_dec": sae.b_dec.detach()}
            if sae.cfg.activation == "topk":
                tensors["k"] = torch.tensor(sae.cfg.k)
            if sae.threshold is not None:
                tensors["activation_function.threshold"] = sae.threshold.detach()
            if sae.W_skip is not None:
                tensors["W_skip"] = sae.W_skip.detach().T
            with atomic_path(folder / f"layer_{layer}.safetensors") as tmp:
                save_file({k: v.float().cpu().contiguous() if v.is_floating_point() else v for k, v in tensors.items()},
                          str(tmp))
        write_json(folder / RECORD_FILE, {**self.record, "activation": first.cfg.activation, "k": first.cfg.k,
                                          "layers": self.layers, "d_transcoder": first.d_sae, "skip": self.skip})
        activation = {"batchtopk": "jumprelu"}.get(first.cfg.activation, first.cfg.activation)
        config = {"model_name": self.model_name, "model_kind": "transcoder_set",
                  "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out",
                  "scan": f"saescope/{self.model_name}-transcoders", "activation": activation,
                  **({"k": first.cfg.k} if activation == "topk" else {}),
                  "transcoders": [f"layer_{layer}.safetensors" for layer in self.layers]}
        with atomic_path(folder / CONFIG_FILE) as tmp:
            tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        return folder


DEFAULT = "default"


def set_path(name: str | Path, model_name: str | None) -> Path:
    """The folder a ``--transcoders`` / ``--out`` value names: ``default`` is the cached set of ``model_name``."""
    if str(name) != DEFAULT:
        return Path(name)
    slug = (model_name or "model").replace("/", "--")
    return saescope_home() / "transcoders" / slug / DEFAULT


def load_set(name: str | Path, model_name: str | None, device: str = "cpu") -> TranscoderSet:
    """``load_transcoders`` of what ``name`` names (``set_path``), with a one-line hint when the default set has
    not been trained yet."""
    folder = set_path(name, model_name)
    if str(name) == DEFAULT and not (folder / CONFIG_FILE).is_file():
        raise SaescopeError(f"no default transcoder set for {model_name} yet (expected in {folder}): train it once "
                            "with `saescope transcoders train` (about an hour on 2 CPU cores), or give --transcoders DIR")
    return load_transcoders(folder, device)


def is_transcoder_set(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and "transcoder_set" in read_text(folder / CONFIG_FILE, "transcoder config")


def load_transcoders(folder: str | Path, device: str = "cpu") -> TranscoderSet:
    """Read a transcoder-set folder (module docstring)."""
    import yaml

    folder = Path(folder)
    if not folder.is_dir() or not (folder / CONFIG_FILE).is_file():
        raise SaescopeError(f"{folder} is not a transcoder set: expected a folder with {CONFIG_FILE}")
    try:
        config = yaml.safe_load(read_text(folder / CONFIG_FILE, "transcoder config"))
    except yaml.YAMLError:
        raise SaescopeError(f"{folder / CONFIG_FILE} is not valid YAML") from None
    if not isinstance(config, dict) or config.get("model_kind") != "transcoder_set":
        raise SaescopeError(f"{folder / CONFIG_FILE} is not a transcoder set (model_kind must be transcoder_set)")
    record = read_json(folder / RECORD_FILE, "transcoder record") if (folder / RECORD_FILE).exists() else {}
    transcoders = {}
    for path in config.get("transcoders") or []:
        sae = load_layer(folder / path, config, record)
        transcoders[sae.cfg.metadata["layer"]] = sae.to(device)
    return TranscoderSet(transcoders, config.get("model_name"), record)


def load_layer(file: Path, config: dict[str, Any] | None = None, record: dict[str, Any] | None = None) -> SAE:
    """One ``layer_<i>.safetensors`` of a set as an SAE (``config``: the set's config.yaml)."""
    import re

    import yaml
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    match = re.fullmatch(r"layer_(\d+)\.safetensors", file.name)
    if match is None:
        raise SaescopeError(f"{file} is not a layer of a transcoder set (layer_<i>.safetensors)")
    if config is None:
        config = yaml.safe_load(read_text(file.parent / CONFIG_FILE, "transcoder config"))
        record = read_json(file.parent / RECORD_FILE, "transcoder record") if (file.parent / RECORD_FILE).exists() else {}
    if not file.is_file():
        raise SaescopeError(f"the transcoder set has no file {file.name}")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError):
        raise SaescopeError(f"{file} is not a readable safetensors file") from None
    layer = int(match.group(1))
    if "W_enc" not in tensors or "b_dec" not in tensors:
        raise SaescopeError(f"{file} has no W_enc/b_dec: not a transcoder")
    activation = (record or {}).get("activation") or config.get("activation") or "relu"
    k = int(tensors["k"]) if "k" in tensors else config.get("k")
    d_transcoder, d_model = tensors["W_enc"].shape
    sae = make_transcoder(layer, d_model, d_transcoder, activation, k, config.get("model_name"), "W_skip" in tensors)
    tensors = {("threshold" if name == "activation_function.threshold" else name): value for name, value in tensors.items()
               if name != "k"}
    for name in ("W_enc", "W_skip"):
        if name in tensors:
            tensors[name] = tensors[name].T
    loaded = build_sae(sae.cfg, tensors, str(file))
    loaded.cfg.metadata["source"] = str(file)  # what a saved intervention names to load it again
    return loaded.eval().requires_grad_(False)
