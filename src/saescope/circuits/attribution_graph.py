"""Attribution graphs over transcoders (circuit-tracer's method) for one prompt: ``attribute_graph``.

**Nodes**, in circuit-tracer's order (the adjacency's rows and columns):
1. every active transcoder feature ``(layer, position, feature)`` off the attention sinks (a sink's MLP
   output stays whole in its error node, as circuit-tracer zeroes position 0);
2. one error node per (layer, position): the MLP's output minus its transcoder's reconstruction;
3. one token-embedding node per position;
4. the logit nodes: the most likely next tokens until their probabilities add up to
   ``logit_probability`` (0.95) or ``max_logits`` (10) are taken.

**Edges** ``A[target, source]`` are direct effects in the local replacement model
(``circuits.replacement``: attention patterns and norms frozen, MLPs replaced by transcoder + error):
``source value × ∂ target / ∂ source``. A feature's target is its pre-activation
(``W_enc[:, f] · mlp_in``); a logit's is the logit minus the mean logit (circuit-tracer's demeaned logit).
The system is linear, so a target's incoming edges add up to the target minus bias terms (tested).

Rows are computed ``batch_size`` targets per backward pass: one forward pass over ``B`` copies of the
prompt is kept, and each batch of targets (one per copy) is a backward pass through it, as circuit-tracer
does. With
``max_feature_nodes`` only that many feature rows are computed: logit rows first, then the features
with the largest estimated influence on the logits (re-estimated after every pass), as circuit-tracer
does; the graph then holds those features only (edges from the others are dropped, as in
circuit-tracer), so its size is bounded by the budget, not by the prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.activations.read import sink_mask
from saescope.errors import SaescopeError
from saescope.model.hooks import intervene
from saescope.sae.transcoders import INPUT_HOOK, OUTPUT_HOOK, TranscoderSet
from saescope.storage import atomic_path, read_json, write_json


@dataclass
class Graph:
    """An attribution graph (module docstring). ``save``/``load`` a folder: ``graph.safetensors`` and
    ``graph.json``."""

    prompt: str
    tokens: list[int]
    token_strings: list[str]
    features: Tensor  # [n_features, 3] long: layer, position, feature id
    activations: Tensor  # [n_features]
    logit_tokens: list[int]
    logit_strings: list[str]
    logit_probabilities: Tensor  # [n_logits]
    adjacency: Tensor  # [n_nodes, n_nodes] float32: rows are targets, columns sources
    n_layers: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def error_index(self, layer: int, position: int) -> int:
        return self.n_features + layer * self.n_pos + position

    def token_index(self, position: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + position

    def logit_index(self, i: int) -> int:
        return self.n_features + (self.n_layers + 1) * self.n_pos + i

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise SaescopeError(f"{folder} is a file: a graph is saved to a folder")
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"features": self.features, "activations": self.activations, "adjacency": self.adjacency,
                   "logit_probabilities": self.logit_probabilities}
        with atomic_path(folder / "graph.safetensors") as tmp:
            save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        write_json(folder / "graph.json", {"prompt": self.prompt, "tokens": self.tokens,
                                           "token_strings": self.token_strings, "logit_tokens": self.logit_tokens,
                                           "logit_strings": self.logit_strings, "n_layers": self.n_layers,
                                           "info": self.info})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Graph:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = read_json(folder / "graph.json", "graph file")
        try:
            tensors = load_file(str(folder / "graph.safetensors"))
        except (SafetensorError, OSError):
            raise SaescopeError(f"{folder / 'graph.safetensors'} is missing or unreadable") from None
        return cls(meta["prompt"], meta["tokens"], meta["token_strings"], tensors["features"], tensors["activations"],
                   meta["logit_tokens"], meta["logit_strings"], tensors["logit_probabilities"], tensors["adjacency"],
                   meta["n_layers"], meta.get("info", {}))


@dataclass
class Prompt:
    """What the plain forward pass gives: per layer the active features and the error."""

    plan: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]]
    features: Tensor
    activations: Tensor
    logits: Tensor  # [vocab] at the last position


def read_prompt(model: torch.nn.Module, transcoders: TranscoderSet, ids: Tensor) -> Prompt:
    layers = transcoders.layers
    captured: dict[str, Tensor] = {}
    hooks = {h.format(layer=layer): (lambda a, name=h.format(layer=layer): captured.__setitem__(name, a))
             for layer in layers for h in (INPUT_HOOK, OUTPUT_HOOK)}
    with torch.no_grad(), intervene(model, hooks):
        logits = model(input_ids=ids[None]).logits[0, -1].float()
    plan, rows, values = {}, [], []
    for layer in layers:
        x, y = captured[INPUT_HOOK.format(layer=layer)][0].float(), captured[OUTPUT_HOOK.format(layer=layer)][0].float()
        sae = transcoders[layer]
        with torch.no_grad():
            acts = sae.encode(x)
            acts[sink_mask(x[None])[0] | sink_mask(y[None])[0]] = 0  # sinks stay whole in their error node
            error = y - sae.decode(acts) - sae.skip(x)  # the skip path stays live (circuits.replacement)
        positions, feats = acts.nonzero(as_tuple=True)
        plan[layer] = (positions, feats, acts[positions, feats][None], error)
        rows.append(torch.stack([torch.full_like(positions, layer), positions, feats], 1))
        values.append(acts[positions, feats])
    return Prompt(plan, torch.cat(rows), torch.cat(values), logits)


def logit_rows(model: torch.nn.Module, transcoders: TranscoderSet, ids: Tensor,
               tokens: list[int]) -> tuple[Tensor, Tensor]:
    """The direct effects on the (demeaned) logits of ``tokens`` only: the prompt's active features
    ``[n, 3]`` and ``[len(tokens), n_nodes]`` rows in the graph's column order (features, errors, tokens).
    One forward and one backward pass: what a study over many prompts needs (``bias.debias.graph``)."""
    read = read_prompt(model, transcoders, ids)
    n_columns = len(read.features) + (len(transcoders.layers) + 1) * len(ids)
    rows = torch.zeros(len(tokens), n_columns)
    _Rows(model, transcoders, ids, read, len(tokens)).fill(torch.tensor(tokens), [("logit", i) for i in range(len(tokens))],
                                                        rows, list(range(len(tokens))))
    return read.features.cpu(), rows


def attribute_graph(lm: Any, transcoders: TranscoderSet, prompt: str, max_logits: int = 10,
                    logit_probability: float = 0.95, batch_size: int = 32, max_feature_nodes: int | None = None,
                    progress: bool = True) -> Graph:
    """The attribution graph of ``prompt`` (module docstring). Example::

        graph = attribute_graph(lm, load_transcoders("transcoders"), "The nurse said that")
        graph.save("graphs/nurse")
    """
    if not prompt.strip():
        raise SaescopeError("the prompt is empty")
    ids = torch.tensor(lm.encode(prompt), device=lm.device)
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if limit is not None and len(ids) > limit:
        raise SaescopeError(f"the prompt has {len(ids)} tokens, longer than the model's context ({limit})")
    tokenizer = lm.tokenizer
    graph = attribute_ids(lm.model, transcoders, ids, max_logits, logit_probability, batch_size, max_feature_nodes,
                          progress, check=lm)
    graph.prompt = prompt
    graph.token_strings = [tokenizer.decode([t]) for t in graph.tokens]
    graph.logit_strings = [tokenizer.decode([t]) for t in graph.logit_tokens]
    graph.info["model"] = lm.name
    return graph


def attribute_ids(model: torch.nn.Module, transcoders: TranscoderSet, ids: Tensor, max_logits: int = 10,
                  logit_probability: float = 0.95, batch_size: int = 32, max_feature_nodes: int | None = None,
                  progress: bool = True, check: Any = None) -> Graph:
    """``attribute_graph`` on token ids and a bare Hugging Face model (no tokenizer needed)."""
    from saescope.circuits.graph_prune import rows_influence

    n_layers = model.config.num_hidden_layers
    if check is not None:
        transcoders.check_model(check)
    if transcoders.layers != list(range(n_layers)):
        missing = sorted(set(range(n_layers)) - set(transcoders.layers))
        raise SaescopeError(f"an attribution graph needs a transcoder at every layer: layer {missing[0]} is missing "
                            "from the set" if missing else "the transcoder set has layers the model lacks")
    if not 0 < logit_probability <= 1 or max_logits < 1 or batch_size < 1:
        raise SaescopeError("logit_probability must be in (0, 1], max_logits and batch_size at least 1")
    started = time.perf_counter()
    read = read_prompt(model, transcoders, ids)
    probs = read.logits.softmax(-1)
    top = probs.topk(min(max_logits, len(probs)))
    n_logits = int((top.values.cumsum(0) < logit_probability).sum()) + 1
    logit_tokens, logit_probs = top.indices[:min(n_logits, max_logits)], top.values[:min(n_logits, max_logits)]
    n_features, n_pos, n_logits = len(read.features), len(ids), len(logit_tokens)
    n_nodes = n_features + (n_layers + 1) * n_pos + n_logits
    budget = n_features if max_feature_nodes is None else min(n_features, max_feature_nodes)
    rows = torch.zeros(n_logits + budget, n_nodes)  # computed rows over every node as a source
    row_nodes = torch.full((n_logits + budget,), -1, dtype=torch.long)  # the node of each computed row
    row_nodes[:n_logits] = torch.arange(n_nodes - n_logits, n_nodes)
    bar = tqdm(total=n_logits + budget, desc="attribution rows", unit="row", disable=not progress)
    passes = _Rows(model, transcoders, ids, read, min(batch_size, n_logits + budget))
    for first in range(0, n_logits, batch_size):
        targets = [("logit", i) for i in range(first, min(first + batch_size, n_logits))]
        passes.fill(logit_tokens, targets, rows, [i for _, i in targets])
        bar.update(len(targets))
    filled, pending = n_logits, torch.ones(n_features, dtype=torch.bool)
    while filled < n_logits + budget:
        order = pending.nonzero().squeeze(-1)
        if max_feature_nodes is not None:  # the most influential first (all rows: layer order is enough)
            influence = rows_influence(rows[:filled], row_nodes[:filled], logit_probs.cpu(), n_nodes)[:n_features]
            order = order[influence[order].argsort(descending=True)]
        chosen = order[:min(batch_size, n_logits + budget - filled)]
        slots = list(range(filled, filled + len(chosen)))
        passes.fill(logit_tokens, [("feature", int(i)) for i in chosen], rows, slots)
        row_nodes[slots] = chosen
        pending[chosen] = False
        filled += len(chosen)
        bar.update(len(chosen))
    bar.close()
    selected = row_nodes[n_logits:].sort().values
    columns = torch.cat([selected, torch.arange(n_features, n_nodes)])
    adjacency = torch.zeros(len(columns), len(columns))
    position = {int(node): i for i, node in enumerate(columns)}
    for row, node in enumerate(row_nodes.tolist()):
        adjacency[position[node]] = rows[row, columns]
    return Graph("", ids.tolist(), [], read.features[selected].cpu(), read.activations[selected].cpu(),
                 logit_tokens.tolist(), [], logit_probs.cpu(), adjacency, n_layers,
                 {"seconds": round(time.perf_counter() - started, 2), "max_feature_nodes": max_feature_nodes,
                  "active_features": n_features, "transcoders": transcoders.record.get("scan") or transcoders.model_name,
                  "d_transcoder": transcoders[0].d_sae})


class _Rows:
    """One forward pass of the local replacement model over ``batch`` copies of the prompt, its autograd graph
    kept: each batch of rows is then one backward pass from ``batch`` targets (one per copy), with no forward
    pass of its own (circuit-tracer's scheme). A feature target's backward stops at its own layer."""

    def __init__(self, model: torch.nn.Module, transcoders: TranscoderSet, ids: Tensor, read: Prompt, batch: int):
        from saescope.circuits.replacement import eager_attention, linearised, parameters_frozen

        self.transcoders, self.read = transcoders, read
        plan = {layer: (p, f, v.expand(batch, -1), e) for layer, (p, f, v, e) in read.plan.items()}
        # no weight needs a gradient (a transcoder's would cost a [d_transcoder, d] buffer per layer and pass)
        with parameters_frozen(model, *transcoders.transcoders.values()), eager_attention(model), \
                torch.enable_grad(), linearised(model, transcoders, plan) as leaves:
            self.logits = model(input_ids=ids[None].expand(batch, -1), logits_to_keep=1).logits[:, -1].float()
        self.leaves = leaves
        self.encoders = {layer: transcoders[layer].W_enc.detach().float() for layer in transcoders.layers}
        self.n_pos = len(ids)

    def fill(self, logit_tokens: Tensor, rows: list[tuple[str, int]], adjacency: Tensor, slots: list[int]) -> None:
        """The incoming edges of ``rows`` (logit or feature targets) into ``adjacency[slots]``."""
        if not rows:
            return
        leaves, read, transcoders = self.leaves, self.read, self.transcoders
        targets = []
        with torch.enable_grad():  # one gather per layer (not one per row: each would fill a [B, T, d] gradient)
            logit_targets = [(b, i) for b, (kind, i) in enumerate(rows) if kind == "logit"]
            if logit_targets:
                copies = torch.tensor([b for b, _ in logit_targets], device=self.logits.device)
                chosen = logit_tokens[torch.tensor([i for _, i in logit_targets])].to(self.logits.device)
                targets.append((self.logits[copies, chosen] - self.logits[copies].mean(-1)).sum())
            feature_rows = torch.tensor([[b, *read.features[i].tolist()] for b, (kind, i) in enumerate(rows)
                                         if kind == "feature"], dtype=torch.long).reshape(-1, 4)
            for layer in feature_rows[:, 1].unique().tolist():
                mine = feature_rows[feature_rows[:, 1] == layer].to(leaves.mlp_inputs[layer].device)
                x = leaves.mlp_inputs[layer][mine[:, 0], mine[:, 2]].float()  # [rows, d]
                targets.append((x * self.encoders[layer][:, mine[:, 3]].T).sum())
            torch.autograd.backward(torch.stack(targets).sum(), retain_graph=True)
        n_features, n_pos = len(read.features), self.n_pos
        acts_rows, error_rows, used = [], [], len(rows)
        for layer in transcoders.layers:
            acts, err = leaves.activations[layer], leaves.errors[layer]
            n = acts.shape[-1]
            acts_rows.append(acts.grad[:used] * acts[:used] if acts.grad is not None else acts.new_zeros(used, n))
            error_rows.append((err.grad[:used] * err[:used]).sum(-1) if err.grad is not None else err.new_zeros(used, n_pos))
        emb = leaves.embeddings
        tokens = (emb.grad[:used] * emb[:used]).sum(-1).float() if emb.grad is not None else acts.new_zeros(used, n_pos)
        block = torch.cat([*acts_rows, *error_rows, tokens], dim=1).detach().cpu()
        adjacency[slots, :n_features + (len(transcoders.layers) + 1) * n_pos] = block
        for leaf in (*leaves.activations.values(), *leaves.errors.values(), emb):
            leaf.grad = None
