"""``DIR/report.html`` of a debias run: metrics before/after, the p_she-vs-BLS scatter, features, side effects.

One self-contained file: inline CSS, the scatter as an inline SVG drawn by matplotlib. Works offline.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from saescope.bias.evaluation import TARGETS, BiasEvaluation
from saescope.reports import figure, render, svg_text


def scatter_svg(evaluation: BiasEvaluation) -> str:
    """p_she against BLS % female per occupation, before (and after) the intervention, as SVG text."""
    base = evaluation.base.occupations
    names = list(base.p_she)
    fig, ax = figure(7, 4.5)
    x = [base.pct_female[n] for n in names]
    ax.scatter(x, [base.p_she[n] for n in names], label=f"before (r={base.pearson_r:.2f})", color="#d62728", s=18)
    if evaluation.intervened is not None:
        new = evaluation.intervened.occupations
        ax.scatter(x, [new.p_she[n] for n in names], label=f"after (r={new.pearson_r:.2f})", color="#1f77b4", s=18)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("BLS % female")
    ax.set_ylabel("mean p_she over templates")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title("Occupations: P(she) / (P(she) + P(he))")
    return svg_text(fig)


def write_report(path: str | Path, evaluation: BiasEvaluation, title: str, features: pd.DataFrame | None = None,
                 selection: pd.DataFrame | None = None, settings: dict | None = None) -> None:
    """Render the report to ``path`` (the caller writes it atomically)."""
    met = evaluation.targets_met
    intervals = evaluation.intervals
    targets = [(name, evaluation.changes[name], intervals.get(name), TARGETS[name], met[name]) for name in met]
    html = render(
        "bias_report.html", title=title, rows=evaluation.summary_rows(), targets=targets, scatter=scatter_svg(evaluation),
        features=None if features is None else features.to_dict("records"),
        feature_columns=[] if features is None else list(features.columns),
        selection=None if selection is None else selection.round(4).to_dict("records"),
        selection_columns=[] if selection is None else list(selection.columns),
        settings=settings or {}, seconds=evaluation.seconds, model=evaluation.model)
    Path(path).write_text(html, encoding="utf-8")
