"""ROME's key statistics: ``C = E[k kᵀ]`` of the inputs of one MLP output projection over corpus text.

The keys are the MLP's hidden activations (``blocks.L.hook_mlp_post``) at every token of the embedded
corpus' training split but the attention sinks (``activations.read.sink_mask``, the rule every
statistic of saescope uses: the first token of each window and any token whose keys' norm is over 10x
the window's median). The forward pass stops at that layer. ``C`` is computed once per (model weights, layer,
corpus, token count) and cached as safetensors in ``$SAESCOPE_HOME/cache/rome/`` (written atomically;
a damaged file is computed again). EasyEdit and the ROME code download Wikipedia statistics at run
time and cache them as pickles; here nothing leaves the machine and nothing is unpickled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import Tensor
from tqdm.auto import tqdm

from saescope.activations.read import hook_activations
from saescope.corpus import first_windows
from saescope.errors import SaescopeError
from saescope.model.fingerprint import model_fingerprint
from saescope.model.loading import LoadedModel
from saescope.storage import atomic_path, saescope_home


def _cache_path(lm: LoadedModel, layer: int, tokens: int, corpus: str, context: int) -> Path:
    rule = "sink_mask"  # which tokens are left out: part of the key, so statistics of another rule are not reused
    key = hashlib.sha256(f"{model_fingerprint(lm)}|{layer}|{tokens}|{corpus}|{context}|{rule}".encode()).hexdigest()[:24]
    return saescope_home() / "cache" / "rome" / f"keys-L{layer}-{key}.safetensors"


def key_second_moment(lm: LoadedModel, layer: int, tokens: int = 50_000, corpus: str = "embedded",
                      context: int = 128, batch_size: int = 8, progress: bool = False, cache: bool = True) -> Tensor:
    """``[d_ff, d_ff]`` float32 ``E[k kᵀ]`` of the layer's MLP keys over ``tokens`` corpus tokens (cached).

    Example::

        C = key_second_moment(lm, layer=6)       # ~50k tokens, then read from the cache
    """
    if not 0 <= layer < lm.n_layers:
        raise SaescopeError(f"layer {layer} is out of range: {lm.name} has {lm.n_layers} layers (0-{lm.n_layers - 1})")
    if tokens < context:
        raise SaescopeError(f"the key statistics need at least {context} tokens, got {tokens}")
    path = _cache_path(lm, layer, tokens, corpus, context)
    if cache:
        stored = _read(path)
        if stored is not None:
            return stored
    hook = f"blocks.{layer}.hook_mlp_post"
    windows = first_windows(lm.tokenizer, tokens, "train", corpus, context)
    total, count = None, 0
    for start in tqdm(range(0, len(windows), batch_size), desc=f"key statistics, layer {layer}", disable=not progress):
        ids = windows[start:start + batch_size].to(lm.device)
        acts, keep = hook_activations(lm, hook, ids)
        keys = acts[keep].double()
        total = keys.T @ keys if total is None else total + keys.T @ keys
        count += len(keys)
    moment = (total / count).float().cpu()
    if cache:
        _write(path, moment, count)
    return moment


def _read(path: Path) -> Tensor | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        moment = load_file(path)["moment"]
    except (OSError, SafetensorError, KeyError):
        return None
    return moment if moment.dim() == 2 and moment.shape[0] == moment.shape[1] and bool(moment.isfinite().all()) else None


def _write(path: Path, moment: Tensor, count: int) -> None:
    from safetensors.torch import save_file

    try:
        with atomic_path(path) as tmp:
            save_file({"moment": moment.contiguous()}, str(tmp), metadata={"tokens": str(count)})
    except (OSError, SaescopeError):
        pass  # an unwritable cache only costs computing it again
