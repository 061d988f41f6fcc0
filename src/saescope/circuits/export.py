"""Export a circuit as a graph file for circuit-tracer's attribution-graph viewer (``circuit export``).

The viewer's schema (``circuit_tracer/frontend/graph_models.py``): ``metadata`` (slug, scan, prompt
tokens, prompt, node threshold), ``qParams``, ``nodes`` (``node_id`` ``"{layer}_{feature}_{position}"``,
``feature_type``, ``ctx_idx``, ``clerp`` label, ``influence``) and ``links`` (``source``, ``target``,
``weight``). Our error nodes map to its reconstruction-error nodes (feature -1), the metric to a target
logit node one layer above the last block. Position-aggregated nodes (``aggregation sum``) are drawn
at the last prompt position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saescope.circuits.graph import METRIC, Circuit, Node


def to_circuit_tracer(circuit: Circuit, labels: Mapping[str, Mapping[str, Any]], prompt_tokens: list[str],
                      n_layers: int, slug: str = "saescope-circuit") -> dict[str, Any]:
    """The circuit-tracer graph JSON of ``circuit`` (labels from ``plot.node_labels``)."""
    last = max(0, len(prompt_tokens) - 1)
    ids: dict[str, str] = {}
    nodes = []
    for node in circuit.nodes:
        layer, position = _layer(node), last if node.position is None else node.position
        node_id = f"{layer}_{node.index}_{position}"
        ids[node.key] = node_id
        label = labels.get(node.key, {}).get("label", node.key).replace("\n", " ")
        nodes.append({"node_id": node_id, "jsNodeId": f"{layer}_{node.index}-{position}",
                      "feature": node.index, "layer": str(layer), "ctx_idx": position,
                      "feature_type": "mlp reconstruction error" if node.is_error else "cross layer transcoder",
                      "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0,
                      "clerp": label, "influence": node.effect, "activation": None})
    metric_id = f"{n_layers + 1}_0_{last}"
    ids[METRIC] = metric_id
    nodes.append({"node_id": metric_id, "jsNodeId": f"L_0-{last}", "feature": 0, "layer": str(n_layers + 1),
                  "ctx_idx": last, "feature_type": "logit", "token_prob": 0.0, "is_target_logit": True, "run_idx": 0,
                  "reverse_ctx_idx": 0, "clerp": f"metric ({circuit.settings.get('metric', 'default')})",
                  "influence": None, "activation": None})
    links = [{"source": ids[e.source], "target": ids[e.target], "weight": e.effect}
             for e in circuit.edges if e.source in ids and e.target in ids]
    metadata = {"slug": slug, "scan": "saescope", "transcoder_list": list(circuit.hooks), "prompt_tokens": prompt_tokens,
                "prompt": "".join(prompt_tokens), "node_threshold": (circuit.settings.get("pruned") or {}).get(
                    "node_threshold", circuit.settings.get("node_threshold")), "schema_version": 1}
    q_params = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": q_params, "nodes": nodes, "links": links}


def _layer(node: Node) -> int:
    parts = node.hook.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else 0
