"""``DIR/report.html`` of the gender-vector study (self-contained: inline SVG plots), and the same
plots as PNG files beside it (``pca.png``, ``flips.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from saescope.bias.gender_vector.vector import DeltaClassifier
from saescope.reports import figure, render, save_png, svg_text

COLUMNS = ["direction", "norm", "f2m", "m2f", "noop", "others_unchanged", "ce_increase", "kl", "flips_per_ce_percent"]


def pca_figure(classifier: DeltaClassifier, female_to_male: np.ndarray):
    """The Δs on their first two principal components, coloured by the edit's direction."""
    fig, ax = figure(5.5, 4.2)
    points = classifier.projection
    for mask, label, color in ((female_to_male, "female name → Male", "#1f77b4"),
                               (~female_to_male, "male name → Female", "#d62728")):
        ax.scatter(points[mask, 0], points[mask, 1], s=12, color=color, label=label, alpha=0.7)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"ROME value changes Δ (classifier test accuracy {classifier.accuracy:.2f})")
    ax.legend(loc="best")
    return fig


def flips_figure(flips: pd.DataFrame):
    """Flip and no-op rates per direction."""
    fig, ax = figure(7, 3.8)
    x = np.arange(len(flips))
    for offset, column, label in ((-0.27, "f2m", "flip female → male (+d)"), (0.0, "m2f", "flip male → female (−d)"),
                                  (0.27, "noop", "no-op on the same gender")):
        ax.bar(x + offset, flips[column], width=0.27, label=label)
    ax.set_xticks(x, flips.direction, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of held-out names")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def write_study_report(path: str | Path, summary: dict, flips: pd.DataFrame, classifier: DeltaClassifier,
                       female_to_male: np.ndarray, generations: list[dict], folder: str | Path) -> None:
    """Render ``report.html`` to ``path`` and write the PNG plots into ``folder``."""
    folder = Path(folder)
    save_png(pca_figure(classifier, female_to_male), folder / "pca.png")
    save_png(flips_figure(flips), folder / "flips.png")
    html = render("gender_vector.html", summary=summary, columns=COLUMNS,
                  flips=flips[COLUMNS].round(4).to_dict("records"), generations=generations,
                  pca=svg_text(pca_figure(classifier, female_to_male)), flips_svg=svg_text(flips_figure(flips)))
    Path(path).write_text(html, encoding="utf-8")
