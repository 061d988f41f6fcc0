"""``gender-vector``: the gender vector of the editing study (``bias gender-vector``), erased.

The study finds gender in ROME's value space: the value changes Δ that flip a first name's gender
line up along one direction. Here that direction is the erased one: the mean Δ of the female→male
name edits minus that of the male→female ones (the study's ``mean_delta``), at the layer the
study edits, erased from the residual at each candidate layer exactly as ``erase`` erases its
read-out direction (anchored at the corpus mean, gated by the definitional-gender features).

The names are training data: ``VECTOR_NAMES`` per gender that the model genders correctly, from the
study's discovery half, none of them a subject of the shipped definitional evaluation prompts. With
``vector`` (a folder written by ``saescope bias gender-vector``) the study's saved
``direction.mean_delta`` is used instead of building one (~1 min of ROME edits on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from saescope.bias.debias.erase import ERASE_FRACTIONS, corpus_means, definitional_gate, erase_layers
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.steering import SubspaceErasure

VECTOR_NAMES = 16  # discovery names per gender


def saved_gender_vector(folder: str | Path) -> Tensor:
    """``direction.mean_delta`` of a study folder (``vectors.safetensors``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / "vectors.safetensors"
    try:
        return load_file(path)["direction.mean_delta"].float()
    except (OSError, SafetensorError, KeyError) as exc:
        raise SaescopeError(f"{path} holds no gender vector ({type(exc).__name__}): run `saescope bias gender-vector "
                            f"--out {folder}` first") from None


def built_gender_vector(lm: LoadedModel, names: int = VECTOR_NAMES, seed: int = 0) -> tuple[Tensor, int]:
    """The mean-Δ gender vector from ``names`` ROME edits per gender, and the layer they edit."""
    from saescope.bias.data import DATA_DIR, read_gendered_prompts
    from saescope.bias.gender_vector.config import GenderVectorConfig
    from saescope.bias.gender_vector.names import ANSWERS, OTHER, PROMPT, gendered_names, split_names
    from saescope.bias.gender_vector.study import traced_layer
    from saescope.editing.request import EditRequest
    from saescope.editing.rome import rome_edits

    evaluation = {word for p in read_gendered_prompts(DATA_DIR / "prompts" / "definitional.json")
                  for word in p.prompt.split()}
    table = split_names(gendered_names(lm, 4 * names), seed=seed)
    table = table[(table.split == "discovery") & ~table.name.isin(evaluation)]
    discovery = table.groupby("gender", sort=False).head(names).reset_index(drop=True)
    if discovery.gender.nunique() != 2:
        raise SaescopeError(f"{lm.name} genders too few names correctly to build a gender vector")
    config = GenderVectorConfig(seed=seed)
    layer = traced_layer(lm, discovery)
    requests = [EditRequest(PROMPT, n, ANSWERS[OTHER[g]]) for n, g in zip(discovery.name, discovery.gender)]
    deltas = torch.stack([e.delta for e in rome_edits(lm, requests, config.rome(layer), batch_size=config.batch)])
    to_male = torch.tensor((discovery.gender == "female").to_numpy())
    return deltas[to_male].mean(0) - deltas[~to_male].mean(0), layer


@register_method("gender-vector")
def gender_vector(ctx: MethodContext) -> list[Candidate]:
    """One gated erasure of the gender vector per candidate layer (and ``strengths``: fractions)."""
    gate_ids, gate = definitional_gate(ctx)
    if ctx.config.vector is not None:
        vector, source = saved_gender_vector(ctx.config.vector), str(ctx.config.vector)
    else:
        vector, layer = built_gender_vector(ctx.lm)
        source = f"{VECTOR_NAMES} ROME name edits per gender at layer {layer}"
    if vector.shape != (ctx.lm.d_model,) or not bool(vector.isfinite().all()) or float(vector.norm()) == 0:
        raise SaescopeError(f"the gender vector ({source}) is not a finite nonzero {ctx.lm.d_model}-vector for {ctx.lm.name}")
    vector = vector / vector.norm()
    layers = erase_layers(ctx.lm, ctx.hook, ctx.config.layers)
    means = corpus_means(ctx.lm, layers)
    return [(f"{layer} x{fraction:g}", gate_ids, SubspaceErasure(layer, vector, means[layer], fraction,
                                                                 name="gender-vector", gate=gate))
            for layer in layers for fraction in ctx.config.strengths or ERASE_FRACTIONS]
