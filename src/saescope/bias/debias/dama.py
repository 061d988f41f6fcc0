"""``dama``: edit the MLP weights where the stereotype is written, and spare definitional gender
(after DAMA, Limisiewicz et al., ICLR 2024).

1. **Where.** ``bias.stereotype_trace`` mean-ablates each layer's MLP output at the occupation token
   of training occupation prompts; the layers whose output carries most of the stereotype gap are
   edited (candidates: the top 2, 4 and 8, or ``strengths`` = layer counts; ``layers`` names them).
   Layer 0 is left out: its MLP acts as part of the embedding (mean-ablating it removes most of the
   gap because it removes the occupation's identity, 76-90 % on the training prompts).
2. **What.** At layer L the gender subspace ``U`` ([d_model, r], ``RANK`` = 16) of the MLP output
   is where the pronoun read-out looks: the top singular directions of the per-prompt gradients of
   log P(she)/P(he) with respect to the occupation token's residual (``erase.readout_gradients``).
   DAMA projects its subspace out of the MLP output for every key (``W <- (I - UUᵀ) W``), which also
   erases the gender of "king" and "mother".
3. **Edit.** Instead, a rank-r change ``ΔW = U Aᵀ`` (only the output inside ``U`` changes) is fitted
   by least squares, in the manner of MEMIT, on three kinds of key (the MLP's hidden activations,
   ``blocks.L.hook_mlp_post``):
   - *occupation keys* (training occupations, in the selection templates and in corpus contexts):
     their output along ``u`` is brought to its mean over the occupations — the stereotyped part
     goes, the occupations' shared part stays;
   - *preservation keys* (definitional subjects and first names: ``My niece``, ``The baroness``,
     ``Henry``; training lists): unchanged;
   - every other key, through ROME's key statistics ``C = E[kkᵀ]`` over corpus text (cached):
     ``ridge`` x ``tr(AᵀCA)`` keeps the change small on ordinary text.
   ``A = (K_oᵀK_o/n_o + K_pᵀK_p/n_p + ridge C)⁻¹ K_oᵀ T / n_o`` in float64. Several layers are
   edited in order, each fitted on the keys of the model with the earlier edits in place.
   The result is a ``WeightDelta`` (``edit/`` in the run folder), undone exactly.

``RANK`` = 16 and ``ridge`` = 1 were chosen on the selection table (ranks 1-32, ridges 0.1-100):
a rank-one edit along the mean read-out direction removed ~25 % of the gap even on the occupations
it was fitted on; the read-out is spread over many directions.

**Honest selection.** The edit is fitted on the ``fit_*`` occupations of ``selection.json``, disjoint
from the occupations the selection table scores it on (and from every evaluation set), so the table
measures how the edit carries to occupations it never saw, as the evaluation does.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from saescope.activations.text import text_activations
from saescope.bias.data import SelectionPrompts
from saescope.bias.debias.erase import readout_gradients
from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.stereotype_trace import stereotype_trace
from saescope.editing.rome import context_prefixes, edit_module
from saescope.editing.statistics import key_second_moment
from saescope.editing.weight_delta import WeightDelta
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel

DAMA_LAYER_COUNTS = (2, 4, 8)
RIDGE = 1.0
RANK = 16
CONTEXTS = 8  # corpus snippets each occupation and preserved subject is read behind
STATS_TOKENS = 20_000  # corpus tokens behind C (it only regularises; ROME's 50,000 cost 2.5x more per layer)


def fit_selection(selection: SelectionPrompts) -> SelectionPrompts:
    """The selection prompts with the ``fit_*`` occupations in place of the scored ones (the same
    prompts when a selection file has no fit lists)."""
    if not selection.fit_female_occupations or not selection.fit_male_occupations:
        return selection
    return replace(selection, female_occupations=selection.fit_female_occupations,
                   male_occupations=selection.fit_male_occupations)


def preserved_subjects(selection: SelectionPrompts, preserve: list[str] | None = None) -> list[str]:
    """The subjects whose gender the edit must keep: ``preserve``, or the selection's definitional
    subjects and ``preserve_*`` lists."""
    subjects = preserve if preserve is not None else [
        *selection.female_subjects, *selection.male_subjects, *selection.preserve_female, *selection.preserve_male]
    subjects = [s.strip() for s in subjects if s.strip()]
    if not subjects:
        raise SaescopeError("the preservation set is empty: give at least one definitional subject (preserve)")
    return subjects


def _check_vocabulary(lm: LoadedModel, subjects: list[str]) -> None:
    unknown = lm.tokenizer.unk_token_id
    for subject in subjects:
        ids = lm.encode(subject)
        if not ids or (unknown is not None and unknown in ids):
            raise SaescopeError(f"preservation subject {subject!r} is not in {lm.name}'s vocabulary")


def key_texts(lm: LoadedModel, selection: SelectionPrompts, subjects: list[str],
              contexts: int = CONTEXTS) -> tuple[list[str], list[str]]:
    """Texts ending at an occupation (templates' openings and corpus snippets before ``The {occupation}``)
    and texts ending at a preserved subject (alone when it is more than one token, and behind snippets)."""
    snippets = context_prefixes(contexts)[1:]
    openings = {t.split("{occupation}")[0] for t in selection.templates}
    occupations = selection.female_occupations + selection.male_occupations
    occupation_texts = [o_open + o for o in occupations for o_open in openings]
    occupation_texts += [s + "The " + o for o in occupations for s in snippets]
    preserve_texts = [s for s in subjects if len(lm.encode(s)) > 1] + [p + s for s in subjects for p in snippets]
    return occupation_texts, preserve_texts


def readout_subspaces(grads: dict[int, Tensor], rank: int) -> dict[int, Tensor]:
    """Per layer, ``[d_model, rank]`` orthonormal: the top right singular vectors of the per-prompt
    read-out gradients (``erase.readout_gradients``), signed so the first one points along their mean."""
    out = {}
    for layer, g in grads.items():
        basis = torch.linalg.svd(g.double(), full_matrices=False).Vh[:rank].T.float()
        basis[:, 0] *= torch.sign(basis[:, 0] @ g.sum(0).float()) or 1.0
        out[layer] = basis
    return out


def low_rank_fit(keys: Tensor, targets: Tensor, preserve: Tensor, moment: Tensor, ridge: float) -> Tensor:
    """``A`` [d_ff, r] minimising ``mean ||Aᵀk_o - t||² + mean ||Aᵀk_p||² + ridge tr(AᵀCA)`` (float64 solve)."""
    k_o, k_p, c = keys.double(), preserve.double(), moment.double()
    system = k_o.T @ k_o / len(k_o) + k_p.T @ k_p / len(k_p) + ridge * c
    system += 1e-6 * system.diagonal().mean() * torch.eye(len(system), dtype=torch.float64)
    return torch.linalg.solve(system, k_o.T @ targets.double() / len(k_o)).float()


def dama_edit(lm: LoadedModel, layers: list[int], occupation_texts: list[str], preserve_texts: list[str],
              subspaces: dict[int, Tensor], ridge: float = RIDGE, stats_tokens: int | None = None) -> WeightDelta:
    """The low-rank edits of ``layers`` (module docstring, step 3), fitted in layer order; ``subspaces``
    gives each layer's orthonormal gender directions ``U`` [d_model, r]."""
    stats_tokens = stats_tokens or STATS_TOKENS
    named = dict(lm.model.named_modules())
    deltas: dict[str, Tensor] = {}
    report: dict[str, dict[str, float]] = {}
    for layer in sorted(layers):
        module = edit_module(lm, layer)
        with WeightDelta(dict(deltas)).apply(lm):
            keys = text_activations(lm, f"blocks.{layer}.hook_mlp_post", occupation_texts + preserve_texts)
        k_o, k_p = keys[:len(occupation_texts)], keys[len(occupation_texts):]
        transposed = type(named[module]).__name__ == "Conv1D"
        weight = named[module].weight.detach().float().cpu()
        weight = weight.T if transposed else weight  # [d_model, d_ff]
        u = subspaces[layer].float()
        written = k_o @ (weight.T @ u)  # [n_o, r]: the occupations' output in the gender subspace
        a = low_rank_fit(k_o, written.mean(0) - written, k_p, key_second_moment(lm, layer, stats_tokens), ridge)
        change = u @ a.T
        deltas[module] = change.T.contiguous() if transposed else change
        after, kept = written + k_o @ a, k_p @ a
        report[str(layer)] = {"stereotype_spread_before": float(written.std(0).norm()),
                              "stereotype_spread_after": float(after.std(0).norm()),
                              "preserved_change": float(kept.norm(dim=1).mean() / (k_p @ (weight.T @ u)).norm(dim=1).mean())}
    return WeightDelta(deltas, {"method": "dama", "layers": sorted(layers), "rank": int(next(iter(subspaces.values())).shape[1]),
                                "ridge": ridge, "fit": report})


@register_method("dama")
def dama(ctx: MethodContext) -> list[Candidate]:
    """One edit per layer set: the top ``strengths`` (default 2, 4, 8) traced layers, or ``layers``."""
    fit = fit_selection(ctx.selection)
    subjects = preserved_subjects(ctx.selection, ctx.config.preserve)
    _check_vocabulary(ctx.lm, subjects)
    if ctx.config.layers is not None:
        for layer in ctx.config.layers:
            edit_module(ctx.lm, layer)  # range check
        layer_sets = [sorted(ctx.config.layers)]
        effects = None
    else:
        trace = stereotype_trace(ctx.lm, fit.female_occupations, fit.male_occupations, fit.templates)
        counts = sorted({int(s) for s in (ctx.config.strengths or DAMA_LAYER_COUNTS)})
        if counts[0] < 1 or counts[-1] > ctx.lm.n_layers - 1:
            raise SaescopeError(f"dama strengths are layer counts (1-{ctx.lm.n_layers - 1}), got {counts}")
        layer_sets, effects = [trace.top_layers(n, first=1) for n in counts], trace.to_dict()
    needed = sorted({layer for layers in layer_sets for layer in layers})
    hooks = {layer: f"blocks.{layer}.hook_resid_post" for layer in needed}
    grads = readout_gradients(ctx.lm, list(hooks.values()), fit)
    subspaces = readout_subspaces({layer: grads[hook] for layer, hook in hooks.items()}, RANK)
    occupation_texts, preserve_texts = key_texts(ctx.lm, fit, subjects)
    out = []
    for layers in layer_sets:
        delta = dama_edit(ctx.lm, layers, occupation_texts, preserve_texts, subspaces)
        if effects is not None:
            delta.info["trace"] = effects
        out.append((f"layers {','.join(map(str, layers))}", [], delta))
    return out
