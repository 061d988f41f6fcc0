"""``CircuitConfig``: the settings of ``saescope circuit find`` (the CLI builds its options from these
fields and their docstrings); saved in the circuit's ``circuit.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saescope.errors import SaescopeError

AGGREGATIONS = ("none", "sum")


@dataclass
class CircuitConfig:
    """How a circuit is found. Example: ``CircuitConfig(method="ig", steps=10, node_threshold=0.1)``."""

    method: str = "ig"
    """ig (integrated gradients) | atp (attribution patching: one gradient at the clean run)."""
    steps: int = 10
    """Integrated-gradients steps (ig only)."""
    node_threshold: float = 0.1
    """Keep nodes whose mean indirect effect has |effect| >= this (metric units, e.g. logits)."""
    edge_threshold: float = 0.01
    """Keep edges whose mean effect has |effect| >= this."""
    aggregation: str = "sum"
    """none: a node per position (all prompts must have the same length) | sum: positions summed."""
    max_nodes: int = 1000
    """Most nodes kept (the largest effects) whatever the threshold, to bound the edge computation."""
    batch_size: int = 32
    """Pairs per forward/backward pass (x steps rows for ig)."""

    def __post_init__(self) -> None:
        if self.method not in ("ig", "atp"):
            raise SaescopeError(f"unknown method {self.method!r}: use ig or atp")
        if self.aggregation not in AGGREGATIONS:
            raise SaescopeError(f"unknown aggregation {self.aggregation!r}: use none or sum")
        for name in ("node_threshold", "edge_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SaescopeError(f"{name} must be a non-negative number, got {value}")
        for name in ("steps", "max_nodes", "batch_size"):
            if getattr(self, name) < 1:
                raise SaescopeError(f"{name} must be at least 1, got {getattr(self, name)}")
