"""``circuit eval``: the faithfulness/completeness curve of a saved circuit on held-out pairs, beside the
component-level circuit of the same size (the model's own basis at the same hook points, found on the
same discovery pairs with the same settings), as a table (JSON) and a plot (PNG).

Example::

    result = evaluate_circuit(lm, circuit, read_pairs("sva_simple_test"), thresholds=[0.02, 0.05, 0.1, 0.2])
    result.rows[0]["faithfulness"], result.rows[0]["component_faithfulness"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saescope.circuits.ablation import faithfulness_curve
from saescope.circuits.config import CircuitConfig
from saescope.circuits.data import Pair, read_pairs
from saescope.circuits.dictionaries import dictionaries_for
from saescope.circuits.find import find_circuit
from saescope.circuits.graph import Circuit
from saescope.circuits.nodes import Dictionary, IdentityDictionary
from saescope.model.loading import LoadedModel
from saescope.precision import MEASURE, precision_record
from saescope.reports import figure, save_png
from saescope.storage import write_json

DEFAULT_THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


@dataclass
class CircuitEvaluation:
    """Rows ``{node_threshold, nodes, faithfulness, completeness, component_faithfulness, ...}`` and the
    reference metrics (model and all-ablated)."""

    rows: list[dict[str, Any]]
    reference: dict[str, float]
    ablation: str
    pairs: str
    settings: dict[str, Any] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)  # the dtype the metrics were measured in, and the rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: str | Path) -> list[Path]:
        """``faithfulness.json`` and ``faithfulness.png`` in ``folder``."""
        folder = Path(folder)
        files = [write_json(folder / f"faithfulness_{self.ablation}.json", self.to_dict())]
        fig, ax = figure(5.5, 3.6)
        nodes = [r["nodes"] for r in self.rows]
        ax.plot(nodes, [r["faithfulness"] for r in self.rows], "o-", label="SAE circuit: faithfulness")
        ax.plot(nodes, [r["completeness"] for r in self.rows], "s--", label="SAE circuit: ablate circuit")
        if any(r.get("component_faithfulness") is not None for r in self.rows):
            ax.plot(nodes, [r.get("component_faithfulness") for r in self.rows], "^-", label="components: faithfulness")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("nodes in circuit")
        ax.set_ylabel("(m(C) - m(∅)) / (m(M) - m(∅))")
        ax.set_title(f"{self.pairs}, {self.ablation} ablation")
        ax.axhline(1.0, color="#999", lw=0.8)
        ax.legend(fontsize=8)
        files.append(save_png(fig, folder / f"faithfulness_{self.ablation}.png"))
        return files


def evaluate_circuit(lm: LoadedModel, circuit: Circuit, pairs: list[Pair], pairs_name: str = "",
                     thresholds: list[float] | None = None, ablation: str = "mean", components: bool = True,
                     dictionaries: Mapping[str, Dictionary] | None = None, progress: bool = False) -> CircuitEvaluation:
    """Faithfulness and completeness over ``thresholds``; with ``components``, the component circuit of each size."""
    dictionaries = dictionaries or dictionaries_for(circuit, lm)
    thresholds = list(thresholds or DEFAULT_THRESHOLDS)
    points, reference = faithfulness_curve(lm, dictionaries, circuit, pairs, thresholds=thresholds, ablation=ablation)
    rows = [asdict(p) for p in points]
    if components:
        basis = _basis(lm, circuit)
        settings = {k: v for k, v in circuit.settings.items() if k in CircuitConfig.__dataclass_fields__}
        config = CircuitConfig(**{**settings, "node_threshold": 0.0, "max_nodes": max([1, *(p.nodes for p in points)])})
        found = find_circuit(lm, basis, read_pairs(circuit.data["pairs"], circuit.data.get("limit")), config,
                             data=circuit.data["pairs"], progress=progress, with_edges=False)
        sizes = [p.nodes for p in points]
        component_points, _ = faithfulness_curve(lm, basis, found, pairs, top_ns=sizes, ablation=ablation)
        for row, point in zip(rows, component_points):
            row["component_faithfulness"] = point.faithfulness
            row["component_completeness"] = point.completeness
    return CircuitEvaluation(rows, reference, ablation, pairs_name, dict(circuit.settings),
                             precision_record(lm.dtype, MEASURE))


def _basis(lm: LoadedModel, circuit: Circuit) -> dict[str, Dictionary]:
    return {hook: IdentityDictionary(lm.d_model, hook) for hook in circuit.hooks}
