"""The ``Circuit`` value: nodes, edges, their effects, the settings and what they were computed on.

A node is an SAE feature or an SAE error term at a hook point, at one position (aggregation
``none``) or at all positions together (``sum``, ``position=None``). An edge joins a node of one
hook point to a node of the next one, or a node of the last hook point to the metric (``"metric"``).

On disk a circuit is a folder: ``circuit.json`` (settings, SAE fingerprints, data, nodes and edges,
readable by any tool) and ``effects.safetensors`` (the mean indirect effect of *every* node, so a
circuit can be re-pruned at another threshold without recomputing). ``prune`` keeps the nodes over
a node threshold (or the ``top_n`` largest) and the edges among them over an edge threshold.

Example::

    circuit = Circuit.load("sva_circuit")
    small = circuit.prune(node_threshold=0.2, edge_threshold=0.05)
    len(small.nodes), small.edges[0]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from saescope.errors import SaescopeError
from saescope.storage import atomic_path, read_json, write_json

METRIC = "metric"
CIRCUIT_FILE, EFFECTS_FILE = "circuit.json", "effects.safetensors"


@dataclass(frozen=True)
class Node:
    """A feature (``index`` ≥ 0) or the error term (``index == -1``) of ``hook`` at ``position`` (None: all)."""

    hook: str
    index: int
    position: int | None = None
    effect: float = 0.0

    @property
    def is_error(self) -> bool:
        return self.index < 0

    @property
    def key(self) -> str:
        where = "" if self.position is None else f"@{self.position}"
        return f"{self.hook}/{'err' if self.is_error else self.index}{where}"


@dataclass(frozen=True)
class Edge:
    """``source`` → ``target`` node keys (``target`` may be ``"metric"``) and the edge's effect."""

    source: str
    target: str
    effect: float


@dataclass
class Circuit:
    """A sparse feature circuit (see the module docstring)."""

    hooks: list[str]
    nodes: list[Node]
    edges: list[Edge]
    settings: dict[str, Any]
    saes: dict[str, str] = field(default_factory=dict)  # hook -> "source (fingerprint)"
    data: dict[str, Any] = field(default_factory=dict)
    feature_effects: dict[str, Tensor] = field(default_factory=dict)  # hook -> [seq, d_sae] or [d_sae]
    error_effects: dict[str, Tensor] = field(default_factory=dict)  # hook -> [seq] or [1]

    def nodes_at(self, hook: str) -> list[Node]:
        return [n for n in self.nodes if n.hook == hook]

    def prune(self, node_threshold: float | None = None, edge_threshold: float = 0.0,
              top_n: int | None = None) -> Circuit:
        """The sub-circuit of nodes with ``|effect| >= node_threshold`` (or the ``top_n`` largest) and
        the edges among them with ``|effect| >= edge_threshold``."""
        ranked = sorted(self.nodes, key=lambda n: -abs(n.effect))
        if top_n is not None:
            kept = ranked[:max(0, top_n)]
        else:
            threshold = node_threshold if node_threshold is not None else 0.0
            kept = [n for n in ranked if abs(n.effect) >= threshold]
        keys = {n.key for n in kept} | {METRIC}
        edges = [e for e in self.edges if e.source in keys and e.target in keys and abs(e.effect) >= edge_threshold]
        settings = {**self.settings, "pruned": {"node_threshold": node_threshold, "edge_threshold": edge_threshold,
                                                "top_n": top_n}}
        return replace(self, nodes=kept, edges=edges, settings=settings)

    def save(self, folder: str | Path) -> Path:
        """Write ``circuit.json`` and ``effects.safetensors`` into ``folder`` (atomically). Returns the folder."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise SaescopeError(f"{folder} is a file: out (--out) must name a folder")
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"features/{h}": t.float().contiguous() for h, t in self.feature_effects.items()}
        tensors |= {f"errors/{h}": t.float().contiguous() for h, t in self.error_effects.items()}
        with atomic_path(folder / EFFECTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        write_json(folder / CIRCUIT_FILE, {
            "format": "saescope-circuit/1", "hooks": self.hooks, "settings": self.settings, "saes": self.saes,
            "data": self.data, "nodes": [{**asdict(n), "key": n.key} for n in self.nodes],
            "edges": [asdict(e) for e in self.edges]})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Circuit:
        """Read a folder written by ``save``, checking every field it reads."""
        folder = Path(folder)
        file = folder / CIRCUIT_FILE
        if not file.is_file():
            raise SaescopeError(f"{folder} is not a circuit: it has no {CIRCUIT_FILE} (write one with saescope circuit find)")
        raw = read_json(file, "circuit")
        try:
            nodes = [Node(str(n["hook"]), int(n["index"]), None if n["position"] is None else int(n["position"]),
                          float(n["effect"])) for n in raw["nodes"]]
            edges = [Edge(str(e["source"]), str(e["target"]), float(e["effect"])) for e in raw["edges"]]
            hooks, settings = list(raw["hooks"]), dict(raw["settings"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SaescopeError(f"{file}: malformed circuit ({type(exc).__name__}: {exc}); write it again with "
                                "saescope circuit find") from None
        tensors: dict[str, Tensor] = {}
        if (folder / EFFECTS_FILE).exists():
            try:
                tensors = load_file(str(folder / EFFECTS_FILE))
            except Exception as exc:  # noqa: BLE001 - safetensors raises several types on corrupt files
                raise SaescopeError(f"cannot read {folder / EFFECTS_FILE}: corrupt or truncated ({exc})") from None
        _check_graph(file, hooks, nodes, edges)
        features = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("features/")}
        errors = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("errors/")}
        return cls(hooks, nodes, edges, settings, dict(raw.get("saes", {})), dict(raw.get("data", {})), features, errors)


def _check_graph(file: Path, hooks: list[str], nodes: list[Node], edges: list[Edge]) -> None:
    """Every node at one of the hook points, indices -1 (error) or more, every edge between known nodes."""
    keys = {n.key for n in nodes} | {METRIC}
    for node in nodes:
        if node.hook not in hooks or node.index < -1 or (node.position is not None and node.position < 0):
            raise SaescopeError(f"{file}: node {node.key} is not at a hook point of the circuit or has a negative "
                                "index/position; write it again with saescope circuit find")
    for edge in edges:
        missing = [end for end in (edge.source, edge.target) if end not in keys]
        if missing:
            raise SaescopeError(f"{file}: an edge names node {missing[0]!r}, which the circuit does not have; "
                                "write it again with saescope circuit find")


def select_nodes(hooks: list[str], features: dict[str, Tensor], errors: dict[str, Tensor],
                 threshold: float) -> list[Node]:
    """Every node with ``|mean effect| >= threshold`` from effect tensors ``[seq, d_sae]`` (or ``[d_sae]``)."""
    if not (math.isfinite(threshold) and threshold >= 0):
        raise SaescopeError(f"node threshold must be a non-negative number, got {threshold}")
    nodes = []
    for hook in hooks:
        f, e = features[hook], errors[hook]
        per_position = f.dim() == 2
        for flat in torch.nonzero(f.abs() >= threshold).tolist():
            position, index = (flat[0], flat[1]) if per_position else (None, flat[0])
            value = f[position, index] if per_position else f[index]
            nodes.append(Node(hook, index, position, float(value)))
        for position in torch.nonzero(e.abs() >= threshold).flatten().tolist():
            nodes.append(Node(hook, -1, position if per_position else None, float(e[position])))
    return sorted(nodes, key=lambda n: -abs(n.effect))
