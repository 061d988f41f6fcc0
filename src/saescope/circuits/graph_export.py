"""A pruned attribution graph as the JSON that circuit-tracer's frontend and Neuronpedia read.

Schema (circuit-tracer ``frontend/graph_models.py``, schema_version 1): ``metadata`` (slug, scan,
transcoder_list, prompt_tokens, prompt, node_threshold, schema_version), ``qParams`` (pinnedIds,
supernodes, linkType, clickedId, sg_pos), ``nodes`` and ``links`` (source, target, weight). Node ids
follow circuit-tracer: a feature ``{layer}_{feature}_{pos}`` (its ``feature`` field is the Cantor pairing
of layer and feature), an error ``{layer}_-1_{pos}``, a token ``E_{token id}_{pos}``, a logit
``{n_layers + 1}_{token id}_{pos}``; ``jsNodeId`` likewise. Only kept nodes and edges are written, so a
pruned graph stays small.
"""

from __future__ import annotations

from typing import Any

from saescope.circuits.graph_prune import Pruned


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def neuronpedia_json(graph: Any, pruned: Pruned, slug: str, scan: str, node_threshold: float) -> dict[str, Any]:
    """The graph's kept nodes and edges in circuit-tracer / Neuronpedia's schema."""
    last = graph.n_pos - 1
    ids: dict[int, str] = {}
    nodes = []

    def add(index: int, **fields: Any) -> None:
        ids[index] = fields["node_id"]
        influence = float(pruned.influence[index])
        nodes.append({"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "",
                      "influence": influence, "activation": None, **fields})

    for i in range(graph.n_features):
        if pruned.node_mask[i]:
            layer, pos, feature = (int(v) for v in graph.features[i])
            add(i, node_id=f"{layer}_{feature}_{pos}", feature=_cantor(layer, feature), layer=str(layer), ctx_idx=pos,
                feature_type="cross layer transcoder", jsNodeId=f"{layer}_{feature}-0")
            nodes[-1]["activation"] = float(graph.activations[i])
    for layer in range(graph.n_layers):
        for pos in range(graph.n_pos):
            index = graph.error_index(layer, pos)
            if pruned.node_mask[index]:
                add(index, node_id=f"{layer}_-1_{pos}", feature=-1, layer=str(layer), ctx_idx=pos,
                    feature_type="mlp reconstruction error", jsNodeId=f"{layer}_-1-{pos}")
    for pos, token in enumerate(graph.tokens):
        add(graph.token_index(pos), node_id=f"E_{token}_{pos}", feature=pos, layer="E", ctx_idx=pos,
            feature_type="embedding", jsNodeId=f"E_{token}-{pos}", clerp=graph.token_strings[pos] if graph.token_strings else "")
    for i, token in enumerate(graph.logit_tokens):
        probability = float(graph.logit_probabilities[i])
        text = graph.logit_strings[i] if graph.logit_strings else str(token)
        add(graph.logit_index(i), node_id=f"{graph.n_layers + 1}_{token}_{last}", feature=int(token),
            layer=str(graph.n_layers + 1), ctx_idx=last, feature_type="logit", token_prob=probability,
            is_target_logit=i == 0, jsNodeId=f"L_{token}-{last}", clerp=f'Output "{text}" (p={probability:.3f})')
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    links = [{"source": ids[int(s)], "target": ids[int(t)], "weight": float(graph.adjacency[t, s])}
             for t, s in zip(targets.tolist(), sources.tolist()) if int(s) in ids and int(t) in ids]
    metadata = {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": list(graph.token_strings),
                "prompt": graph.prompt, "node_threshold": node_threshold, "schema_version": 1,
                "info": {"creator_name": "saescope", "generator": {"name": "saescope attribute_graph"},
                         **{k: v for k, v in graph.info.items() if isinstance(v, (int, float, str))}}}
    return {"metadata": metadata,
            "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
            "nodes": nodes, "links": links}
