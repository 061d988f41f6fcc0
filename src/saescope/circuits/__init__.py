"""Sparse feature circuits (Marks et al. 2024) over an SAE suite: pairs, node attribution (AtP / IG)
with error terms, edges, the ``Circuit`` value, faithfulness, exact-patching checks, plots, export.

Example::

    import saescope
    from saescope.circuits import CircuitConfig, find_circuit, load_dictionaries, read_pairs
    lm = saescope.load_model()
    circuit = find_circuit(lm, load_dictionaries("default", lm), read_pairs("sva_simple_train", limit=100),
                           CircuitConfig(method="ig", steps=10))
    circuit.save("sva_circuit")

Names are imported lazily (``circuits.config`` does not load torch)."""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"Circuit": "graph", "Node": "graph", "Edge": "graph", "CircuitConfig": "config", "read_pairs": "data",
            "Pair": "data", "find_circuit": "find", "attribute": "attribution", "logit_diff": "attribution",
            "faithfulness_curve": "ablation", "CircuitAblator": "ablation", "evaluate_circuit": "evaluation",
            "exact_effects": "patching", "check_against_patching": "patching", "IdentityDictionary": "nodes",
            "load_dictionaries": "dictionaries", "to_circuit_tracer": "export"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.circuits", {name: f"saescope.circuits.{module}" for name, module in _EXPORTS.items()})
