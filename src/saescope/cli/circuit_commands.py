"""``saescope circuit ...``: find, evaluate, plot and check sparse feature circuits."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from saescope.circuits.config import CircuitConfig
from saescope.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    MEASURE_DTYPE_OPTION,
    MODEL_OPTION,
    config_options,
    console,
    parse_floats,
    parse_ids,
    print_json,
)
from saescope.errors import SaescopeError

circuit_app = typer.Typer(no_args_is_help=True, help="Sparse feature circuits: find, evaluate, plot, check.")

PAIRS_HELP = ("Shipped pair set (sva_simple_train, sva_simple_test, sva_nounpp_*, sva_within_rc_*) or a JSONL file of "
              "{clean, patch, clean_answer, patch_answer} (or {prompt, answer} / {text} for no-pair mode).")


def _model(model: str | None, device: str, dtype: str):
    """Circuits are measurements (attribution, patching, faithfulness): ``auto`` is float32 everywhere."""
    from saescope.model.loading import load_model

    return load_model(model, device=device, dtype=dtype, purpose="measure")


def _circuit(folder: Path):
    from saescope.circuits.graph import Circuit

    return Circuit.load(folder)


@circuit_app.command("find")
@config_options(CircuitConfig)
def find(
    pairs: str = typer.Option("sva_simple_train", help=PAIRS_HELP),
    limit: int = typer.Option(None, help="Use only the first N pairs."),
    saes: str = typer.Option("default", help="'default' (the shipped suite), a suite folder, or comma-separated SAE folders."),
    layers: str = typer.Option(None, help="Only these layers of the suite (comma-separated)."),
    components: bool = typer.Option(False, "--components", help="Nodes are the model's own residual dimensions."),
    out: Path = typer.Option(..., help="Output folder (circuit.json + effects.safetensors)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a circuit already in OUT."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    config: CircuitConfig = None,
) -> None:
    """Find the circuit of a set of prompt pairs over the SAE suite's features and error terms.

    Example: saescope circuit find --pairs sva_simple_train --limit 100 --node-threshold 0.1 --out sva_circuit
    """
    from saescope.circuits.data import read_pairs
    from saescope.circuits.dictionaries import load_dictionaries
    from saescope.circuits.find import find_circuit

    if (out / "circuit.json").exists() and not overwrite:
        raise SaescopeError(f"{out} already holds a circuit: pass --overwrite or choose another --out")
    if out.exists() and not out.is_dir():
        raise SaescopeError(f"{out} is a file: --out must name a folder")
    rows = read_pairs(pairs, limit)
    lm = _model(model, device, dtype)
    dictionaries = load_dictionaries(saes, lm, parse_ids(layers, "--layers"), components)
    circuit = find_circuit(lm, dictionaries, rows, config, data=pairs, limit=limit)
    circuit.save(out)
    dropped = circuit.data["dropped_unequal_length"]
    note = f" ({dropped} pairs dropped: clean/patch of unequal token length)" if dropped else ""
    console.print(f"circuit: {len(circuit.nodes)} nodes, {len(circuit.edges)} edges from {circuit.data['n_pairs']} "
                  f"pairs{note} -> {out}")


@circuit_app.command("eval")
def evaluate(
    folder: Path = typer.Argument(..., help="A circuit folder from `circuit find`."),
    pairs: str = typer.Option("sva_simple_test", help=PAIRS_HELP),
    limit: int = typer.Option(None, help="Use only the first N pairs."),
    thresholds: str = typer.Option("0.005,0.01,0.02,0.05,0.1,0.2,0.5", help="Node thresholds to prune at."),
    ablation: str = typer.Option("mean", help="mean | zero | resample."),
    components: bool = typer.Option(True, "--components/--no-components", help="Also the component circuit of each size."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Faithfulness and completeness of a circuit on held-out pairs (table, JSON and PNG in the folder).

    Example: saescope circuit eval sva_circuit --pairs sva_simple_test
    """
    from saescope.circuits.data import read_pairs
    from saescope.circuits.evaluation import evaluate_circuit

    circuit = _circuit(folder)
    values = parse_floats(thresholds, "--thresholds")
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise SaescopeError(f"--thresholds must be non-negative numbers, got {thresholds!r}")
    rows = read_pairs(pairs, limit)
    result = evaluate_circuit(_model(model, device, dtype), circuit, rows, pairs, values, ablation, components)
    files = result.save(folder)
    if json_out:
        print_json(result.to_dict())
        return
    console.print(f"m(model) {result.reference['metric_model']:+.3f}   m(all ablated) {result.reference['metric_empty']:+.3f}")
    console.print(f"{'threshold':>10} {'nodes':>6} {'faithful':>9} {'complete':>9} {'components':>11}")
    for row in result.rows:
        comp = row.get("component_faithfulness")
        console.print(f"{row['node_threshold']:>10} {row['nodes']:>6} {row['faithfulness']:>9.3f} "
                      f"{row['completeness']:>9.3f} {'' if comp is None else f'{comp:.3f}':>11}")
    console.print(f"wrote {', '.join(str(f) for f in files)}")


@circuit_app.command("plot")
def plot(
    folder: Path = typer.Argument(..., help="A circuit folder from `circuit find`."),
    run: list[str] = typer.Option(None, help="HOOK=RUN: a features RUN for that hook point's SAE (repeatable); its nodes "
                                   "show the RUN's explanations (saescope explain) or top tokens."),
    node_threshold: float = typer.Option(None, help="Draw only nodes with |effect| >= this."),
    edge_threshold: float = typer.Option(0.0, help="Draw only edges with |effect| >= this."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Draw the circuit: circuit.dot, circuit.svg (and .png with Graphviz), circuit.html (click a node).

    Example: saescope circuit plot sva_circuit --node-threshold 0.2
    """
    from saescope.circuits.dictionaries import dictionaries_for
    from saescope.circuits.plot import node_labels, write_plots
    from saescope.features.run import FeatureRun

    for name, value in (("--node-threshold", node_threshold), ("--edge-threshold", edge_threshold)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise SaescopeError(f"{name} must be a non-negative number, got {value}")
    circuit = _circuit(folder).prune(node_threshold=node_threshold, edge_threshold=edge_threshold)
    runs = {}
    for item in run or []:
        hook, sep, path = item.partition("=")
        if not sep or hook not in circuit.hooks:
            raise SaescopeError(f"--run must be HOOK=RUN with HOOK one of {', '.join(circuit.hooks)}, got {item!r}")
        runs[hook] = FeatureRun.load(path)
        if runs[hook].manifest.get("hook") != hook:
            raise SaescopeError(f"the RUN {path} was extracted at {runs[hook].manifest.get('hook')}, not at {hook}: "
                                "give each hook point the RUN of its own SAE")
    lm = _model(model, device, "auto")
    labels = node_labels(lm, dictionaries_for(circuit, lm), circuit, runs)
    files, note = write_plots(circuit, folder, labels)
    if note:
        console.print(note)
    console.print(f"wrote {', '.join(str(f) for f in files)}")


@circuit_app.command("patch")
def patch(
    pairs: str = typer.Option("sva_simple_test", help=PAIRS_HELP),
    example: int = typer.Option(0, help="Which pair (0-based) to check."),
    top: int = typer.Option(100, help="How many of the largest nodes to patch exactly."),
    steps: int = typer.Option(10, help="Integrated-gradients steps."),
    saes: str = typer.Option("default", help="'default', a suite folder, or comma-separated SAE folders."),
    layers: str = typer.Option(None, help="Only these layers of the suite."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Exact activation patching of one pair's top nodes vs attribution patching and IG (Pearson r, signs).

    Example: saescope circuit patch --pairs sva_simple_test --example 0 --top 100
    """
    from saescope.circuits.data import read_pairs
    from saescope.circuits.dictionaries import load_dictionaries
    from saescope.circuits.find import pair_batches
    from saescope.circuits.patching import check_against_patching

    if top < 1:
        raise SaescopeError(f"--top must be at least 1, got {top}")
    rows = read_pairs(pairs)
    if not 0 <= example < len(rows):
        raise SaescopeError(f"--example {example} is out of range: {pairs} has {len(rows)} pairs (0-{len(rows) - 1})")
    lm = _model(model, device, dtype)
    batches, _ = pair_batches(lm, [rows[example]], 1)
    dictionaries = load_dictionaries(saes, lm, parse_ids(layers, "--layers"))
    check = check_against_patching(lm, dictionaries, batches[0], top=top, steps=steps)
    if json_out:
        from saescope.precision import MEASURE, precision_record

        print_json({**check.to_dict(), "precision": precision_record(lm.dtype, MEASURE)})
        return
    for method in ("ig", "atp"):
        console.print(f"{method:>4}: pearson r {check.pearson[method]:.3f}, sign agreement {check.sign_agreement[method]:.2%} "
                      f"over {len(check.nodes)} nodes")


@circuit_app.command("export")
def export(
    folder: Path = typer.Argument(..., help="A circuit folder from `circuit find`."),
    out: Path = typer.Option(None, help="Output JSON; default FOLDER/circuit_tracer.json."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Write the circuit as a graph file for circuit-tracer's attribution-graph viewer.

    Example: saescope circuit export sva_circuit
    """
    from saescope.circuits.data import read_pairs
    from saescope.circuits.dictionaries import dictionaries_for
    from saescope.circuits.export import to_circuit_tracer
    from saescope.circuits.plot import node_labels
    from saescope.storage import write_json

    circuit = _circuit(folder)
    lm = _model(model, device, "auto")
    labels = node_labels(lm, dictionaries_for(circuit, lm), circuit)
    prompt = read_pairs(circuit.data["pairs"], 1)[0].clean if circuit.data.get("pairs") else ""
    tokens = [lm.tokenizer.decode([t]) for t in lm.encode(prompt)]
    n_layers = getattr(lm.model.config, "num_hidden_layers", len(circuit.hooks))
    target = write_json(out or folder / "circuit_tracer.json", to_circuit_tracer(circuit, labels, tokens, n_layers))
    console.print(f"wrote {target}")
