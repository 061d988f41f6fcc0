"""``saescope graph ...``: attribution graphs over transcoders (circuit-tracer's method), and their export."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from saescope.cli.common import DEVICE_OPTION, JSON_OPTION, MEASURE_DTYPE_OPTION, MODEL_OPTION, console, print_json
from saescope.errors import SaescopeError

graph_app = typer.Typer(no_args_is_help=True, help="Attribution graphs over transcoders: attribute, export.")


@graph_app.command("attribute")
def attribute(
    prompt: str = typer.Option(..., help="The prompt whose next-token prediction is explained."),
    transcoders: str = typer.Option("default", help="A transcoder-set folder, or 'default': the set "
                                                   "`saescope transcoders train` keeps in the cache."),
    out: Path = typer.Option(..., help="Output folder: graph.safetensors + graph.json (the whole graph), "
                                       "graph-neuronpedia.json (the pruned graph) and graph.html (its view)."),
    max_logits: int = typer.Option(10, help="Most logit nodes."),
    logit_probability: float = typer.Option(0.95, help="Logit nodes are added until their probabilities reach this."),
    max_feature_nodes: int = typer.Option(None, help="Compute incoming edges for at most this many features "
                                                     "(the most influential); default: all."),
    node_threshold: float = typer.Option(0.8, help="Pruning: keep the nodes with this share of the influence."),
    edge_threshold: float = typer.Option(0.98, help="Pruning: keep the edges with this share of the influence."),
    batch_size: int = typer.Option(32, help="Targets per backward pass."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Build the attribution graph of a prompt, prune it, and write it with its scores.

    Example: saescope graph attribute --prompt "The nurse said that" --transcoders transcoders --out graphs/nurse
    """
    from saescope.circuits.attribution_graph import attribute_graph
    from saescope.circuits.graph_export import neuronpedia_json
    from saescope.circuits.graph_html import graph_html
    from saescope.circuits.graph_prune import check_thresholds, graph_scores, prune
    from saescope.model.loading import load_model
    from saescope.sae.transcoders import load_set, set_path
    from saescope.storage import atomic_path

    if out.exists() and not out.is_dir():
        raise SaescopeError(f"{out} is a file: --out must name a folder")
    check_thresholds(node_threshold, edge_threshold)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    sets = load_set(transcoders, lm.name)
    graph = attribute_graph(lm, sets.to(device), prompt, max_logits, logit_probability, batch_size, max_feature_nodes)
    replacement, completeness = graph_scores(graph)
    graph.info |= {"replacement_score": replacement, "completeness_score": completeness,
                   "transcoders_path": str(set_path(transcoders, lm.name).resolve())}  # what the app intervenes with
    pruned = prune(graph, node_threshold, edge_threshold)
    graph.save(out)
    exported = neuronpedia_json(graph, pruned, slug=out.name, scan=str(sets.record.get("scan") or sets.model_name),
                                node_threshold=node_threshold)
    with atomic_path(out / "graph-neuronpedia.json") as tmp:
        tmp.write_text(json.dumps(exported))
    with atomic_path(out / "graph.html") as tmp:
        tmp.write_text(graph_html(exported))
    summary = {"prompt_tokens": graph.n_pos, "active_features": graph.info["active_features"],
               "features": graph.n_features, "nodes_kept": len(exported["nodes"]),
               "links_kept": len(exported["links"]), "replacement_score": replacement,
               "completeness_score": completeness, "seconds": graph.info["seconds"],
               "top_logits": dict(zip(graph.logit_strings, graph.logit_probabilities.tolist()))}
    if json_output:
        print_json(summary)
        return
    for key, value in summary.items():
        console.print(f"{key:>20}  {value:.4f}" if isinstance(value, float) else f"{key:>20}  {value}")
    console.print(f"wrote {out}/graph.safetensors, graph.json, graph-neuronpedia.json and graph.html (open it offline)")
