"""Drawing a circuit: Graphviz ``.dot`` (always), SVG/PNG (through ``dot`` when it is installed, else a
built-in layered SVG), and an offline HTML view where a click on a node shows its feature page.

Layout: one row per hook point, earliest at the bottom, the metric on top; features are ellipses
labelled with their id and, from a features RUN of that hook point, the feature's explanation
(``saescope explain``) or its top activating tokens, else the tokens its decoder direction promotes;
error terms are grey boxes; edge width grows with |effect|, blue for
positive and red for negative effects.

Example::

    labels = node_labels(lm, saes, circuit)
    files, note = write_plots(circuit, "sva_circuit", labels)
"""

from __future__ import annotations

import html
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saescope.circuits.graph import METRIC, Circuit, Node
from saescope.circuits.nodes import Dictionary
from saescope.features.explanations import best_explanation, explanation_label
from saescope.features.logit_effects import logit_effects
from saescope.features.run import FeatureRun
from saescope.model.loading import LoadedModel
from saescope.reports import render
from saescope.sae.core import SAE
from saescope.storage import atomic_path

LABEL_CHARS = 28
"""How much of an explanation a node's label shows (the HTML view shows all of it)."""
INSTALL_DOT = "Graphviz's `dot` is not installed (apt-get install graphviz, brew install graphviz, or conda install graphviz)"
ROW, COLUMN, RADIUS = 110, 120, 26


def node_labels(lm: LoadedModel, dictionaries: Mapping[str, Dictionary], circuit: Circuit,
                runs: Mapping[str, FeatureRun] | None = None) -> dict[str, dict[str, Any]]:
    """``{node key: {"label", "title", "promoted", "examples", "explanation"}}`` for every node of ``circuit``."""
    out: dict[str, dict[str, Any]] = {}
    for hook in circuit.hooks:
        nodes = [n for n in circuit.nodes_at(hook) if not n.is_error]
        dictionary = dictionaries.get(hook)
        promoted: dict[int, list[str]] = {}
        if isinstance(dictionary, SAE) and nodes:
            _, ids, _, _ = logit_effects(lm, dictionary, n=5, features=[n.index for n in nodes])
            promoted = {n.index: [lm.tokenizer.decode([int(t)]) for t in row] for n, row in zip(nodes, ids)}
        run = (runs or {}).get(hook)
        for node in circuit.nodes_at(hook):
            out[node.key] = _label(node, promoted.get(node.index, []), run)
    return out


def _label(node: Node, promoted: list[str], run: FeatureRun | None) -> dict[str, Any]:
    layer = node.hook.split(".")[1] if node.hook.startswith("blocks.") else node.hook
    where = "" if node.position is None else f" @{node.position}"
    if node.is_error:
        return {"label": f"L{layer} err{where}", "title": f"{node.hook} error term{where}", "promoted": [], "examples": [],
                "explanation": ""}
    examples: list[str] = []
    explanation = labelled = ""
    if run is not None and node.index < run.d_sae:
        table = run.examples(node.index).head(5)
        examples = ["".join(f"[{t}]" if i == c else t for i, t in enumerate(tokens))
                    for tokens, c in zip(table["context_tokens"], table["center"])]
        tokens = run.top_tokens[run.top_tokens.feature == node.index].head(3)
        promoted = [str(t) for t in tokens["token"]] or promoted
        explained = run.explanations().get(node.index, [])
        explanation, labelled = best_explanation(explained), explanation_label(explained)
    shown = " ".join(repr(t.strip())[1:-1] or "·" for t in promoted[:3])
    if explanation:
        shown = explanation if len(explanation) <= LABEL_CHARS else explanation[:LABEL_CHARS - 1].rstrip() + "…"
    return {"label": f"L{layer} #{node.index}{where}\n{shown}", "title": f"{node.hook} feature {node.index}{where}",
            "promoted": promoted, "examples": examples, "explanation": labelled}


def to_dot(circuit: Circuit, labels: Mapping[str, Mapping[str, Any]]) -> str:
    """The circuit in Graphviz's language (rows by hook point, metric on top)."""
    lines = ["digraph circuit {", "  rankdir=BT; node [fontname=Helvetica fontsize=10]; edge [arrowsize=0.5];",
             f'  "{METRIC}" [shape=doubleoctagon label="metric" style=filled fillcolor="#ffe9a8"];']
    biggest = max((abs(e.effect) for e in circuit.edges), default=1.0) or 1.0
    for hook in circuit.hooks:
        members = []
        for node in circuit.nodes_at(hook):
            text = labels.get(node.key, {}).get("label", node.key).replace('"', "'").replace("\n", "\\n")
            shape = 'shape=box style=filled fillcolor="#dddddd"' if node.is_error else 'shape=ellipse'
            members.append(f'"{node.key}" [{shape} label="{text}\\n{node.effect:+.3g}"];')
        if members:
            lines.append("  { rank=same; " + " ".join(members) + " }")
    for edge in circuit.edges:
        width = 0.5 + 4.5 * abs(edge.effect) / biggest
        color = "#3b6fd4" if edge.effect >= 0 else "#d43b3b"
        lines.append(f'  "{edge.source}" -> "{edge.target}" [penwidth={width:.2f} color="{color}"];')
    return "\n".join(lines + ["}"]) + "\n"


def layered_svg(circuit: Circuit, labels: Mapping[str, Mapping[str, Any]]) -> str:
    """A self-contained SVG of the circuit without Graphviz (nodes carry ``data-key`` for the HTML view)."""
    rows = [circuit.nodes_at(h) for h in circuit.hooks]
    width = COLUMN * max([1, *map(len, rows)]) + COLUMN
    height = ROW * (len(rows) + 1) + ROW // 2
    where: dict[str, tuple[float, float]] = {METRIC: (width / 2, ROW / 2)}
    for i, row in enumerate(rows):
        y = height - ROW / 2 - i * ROW
        for j, node in enumerate(row):
            where[node.key] = (COLUMN * (j + 1) + (width - COLUMN * (len(row) + 1)) / 2, y)
    biggest = max((abs(e.effect) for e in circuit.edges), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="Helvetica" '
             'font-size="10">']
    for edge in circuit.edges:
        if edge.source in where and edge.target in where:
            (x1, y1), (x2, y2) = where[edge.source], where[edge.target]
            color = "#3b6fd4" if edge.effect >= 0 else "#d43b3b"
            parts.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="{color}" '
                         f'stroke-opacity="0.7" stroke-width="{0.5 + 4.5 * abs(edge.effect) / biggest:.2f}"/>')
    for i, hook in enumerate(circuit.hooks):
        parts.append(f'<text x="6" y="{height - ROW / 2 - i * ROW:.0f}" fill="#666">{html.escape(hook)}</text>')
    parts.append(f'<g class="node" data-key="{METRIC}"><ellipse cx="{width / 2:.0f}" cy="{ROW / 2:.0f}" rx="34" ry="16" '
                 'fill="#ffe9a8" stroke="#333"/><text x="{:.0f}" y="{:.0f}" text-anchor="middle">metric</text></g>'
                 .format(width / 2, ROW / 2 + 4))
    for row in rows:
        for node in row:
            x, y = where[node.key]
            text = labels.get(node.key, {}).get("label", node.key).split("\n")
            shape = (f'<rect x="{x - RADIUS:.0f}" y="{y - 16:.0f}" width="{2 * RADIUS}" height="32" fill="#dddddd" '
                     'stroke="#333"/>' if node.is_error else
                     f'<ellipse cx="{x:.0f}" cy="{y:.0f}" rx="{RADIUS + 18}" ry="18" fill="#ffffff" stroke="#333"/>')
            lines = "".join(f'<tspan x="{x:.0f}" dy="{0 if k == 0 else 11}">{html.escape(t)}</tspan>'
                            for k, t in enumerate([*text, f"{node.effect:+.3g}"]))
            parts.append(f'<g class="node" data-key="{html.escape(node.key)}" style="cursor:pointer">{shape}'
                         f'<text x="{x:.0f}" y="{y - 8:.0f}" text-anchor="middle">{lines}</text></g>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def write_plots(circuit: Circuit, folder: str | Path, labels: Mapping[str, Mapping[str, Any]]) -> tuple[list[Path], str]:
    """Write ``circuit.dot``, ``circuit.svg`` (+ ``circuit.png`` with Graphviz) and ``circuit.html`` into
    ``folder``. Returns the files and a note (how to install Graphviz when it is missing)."""
    folder = Path(folder)
    files = [_write(folder / "circuit.dot", to_dot(circuit, labels))]
    note = ""
    dot = shutil.which("dot")
    if dot is not None:
        for fmt in ("svg", "png"):
            with atomic_path(folder / f"circuit.{fmt}") as tmp:
                subprocess.run([dot, f"-T{fmt}", str(files[0]), "-o", str(tmp)], check=True, capture_output=True)
            files.append(folder / f"circuit.{fmt}")
    else:
        files.append(_write(folder / "circuit.svg", layered_svg(circuit, labels)))
        note = f"{INSTALL_DOT}: wrote circuit.dot and a built-in layout in circuit.svg"
    page = render("circuit.html", svg=layered_svg(circuit, labels), circuit=circuit,
                  nodes={k: dict(v) for k, v in labels.items()},  # tojson in the template: no </script> breaks out
                  node_rows=sorted(circuit.nodes, key=lambda n: -abs(n.effect)))
    files.append(_write(folder / "circuit.html", page))
    return files, note


def _write(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
