"""Static HTML dashboards of a features RUN: a sortable, filterable index and one page per feature.

Everything is inline (CSS, a few lines of JS, SVG histograms): the pages work offline, no CDN.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from saescope.features.run import FeatureRun
from saescope.reports import render
from saescope.storage import atomic_path

_STAT_FIELDS = ("count", "log10_density", "mean", "std", "skewness", "kurtosis", "max")
_COLUMNS = ("feature", "count", "log10_density", "mean", "std", "skewness", "kurtosis", "max", "top tokens", "explanation")


def write_dashboard(run: FeatureRun, out: str | Path, features: list[int] | None = None) -> Path:
    """Write ``out/index.html`` and ``out/feature_<id>.html`` for ``features`` (default: every feature
    that fires). The folder is replaced atomically. Returns ``out``.

    Example::

        write_dashboard(FeatureRun.load("runs/default"), "dash")      # open dash/index.html
    """
    context = index_context(run, features)
    chosen = [int(r["feature"]) for r in context["rows"]]
    explained = run.explanations()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        index = render("dashboard_index.html", **context)
        (tmp / "index.html").write_text(index, encoding="utf-8")
        for feature in chosen:
            page = render("dashboard_feature.html", **feature_context(run, feature), explanations=explained.get(feature, []))
            (tmp / f"feature_{feature}.html").write_text(page, encoding="utf-8")
    return Path(out)


def index_context(run: FeatureRun, features: list[int] | None) -> dict:
    """What ``dashboard_index.html`` shows: one row per feature (default: every feature that fires)."""
    stats = run.stats
    chosen = features if features is not None else stats.feature[stats["count"] > 0].tolist()
    for feature in chosen:
        run.check_feature(feature)
    rows = stats[stats.feature.isin(chosen)].copy()
    rows["top_tokens"] = [" ".join(repr(t) for t in tokens[:6]) for tokens in rows.top_tokens]
    rows["explanation"] = run.explanation_labels(list(rows.feature))
    return {"manifest": run.manifest, "columns": _COLUMNS, "rows": rows.to_dict(orient="records"),
            "n_live": int((stats["count"] > 0).sum())}


def _contexts(rows) -> list[dict]:
    """Contexts as ``{"activation", "tokens": [(token, shade 0-1, is the example token, activation)]}``: the
    page shades each token by its activation and shows the value on hover."""
    out = []
    for ex in rows.itertuples():
        peak = max(max(ex.context_acts), 1e-9)
        tokens = [(tok, max(0.0, act) / peak, i == ex.center, act) for i, (tok, act) in
                  enumerate(zip(ex.context_tokens, ex.context_acts))]
        out.append({"activation": ex.activation, "tokens": tokens})
    return out


def quantile_groups(run: FeatureRun, feature: int) -> list[dict]:
    """The contexts ``features sample`` drew for ``feature`` (split "explain"), one group per activation
    quantile, strongest first, then the "does not fire" group; ``[]`` when the RUN has no samples."""
    samples = run.samples_of(feature)
    if samples is None:
        return []
    mine = samples[samples.split == "explain"]
    groups = []
    for quantile, rows in sorted(mine.groupby("quantile"), key=lambda item: -item[0]):
        label = ("does not fire" if quantile < 0 else
                 f"quantile {int(quantile) + 1}: {rows.activation.min():.3g} – {rows.activation.max():.3g}")
        groups.append({"label": label, "quantile": int(quantile), "examples": _contexts(rows)})
    return groups


def feature_context(run: FeatureRun, feature: int) -> dict:
    info = run.feature(feature)
    stats = [(k, _fmt(info["stats"][k])) for k in _STAT_FIELDS]
    examples = _contexts(info["examples"])
    counts, edges = info["histogram"]
    return {"feature": feature, "stats": stats, "examples": examples, "histogram_svg": _histogram_svg(counts, edges),
            "quantiles": quantile_groups(run, feature),
            "top_tokens": list(zip(info["top_tokens"].token, info["top_tokens"].max_activation))[:20],
            "promoted": list(zip(info["promoted"].token, info["promoted"].value)),
            "suppressed": list(zip(info["suppressed"].token, info["suppressed"].value))}


def _fmt(value: float) -> str:
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return "nan" if math.isnan(value) else f"{value:.6g}"


def _histogram_svg(counts: np.ndarray, edges: np.ndarray, width: int = 560, height: int = 120) -> str:
    nonzero = np.flatnonzero(counts)
    if len(nonzero) == 0:
        return "<p>never fires</p>"
    lo, hi = nonzero[0], nonzero[-1] + 1
    shown, bar = counts[lo:hi], width / (hi - lo)
    top = shown.max()
    bars = "".join(f'<rect x="{i * bar:.1f}" y="{height - 15 - (height - 20) * c / top:.1f}" width="{bar * 0.9:.1f}" '
                   f'height="{(height - 20) * c / top:.1f}" fill="#e65c00"><title>{edges[lo + i]:.3g}–'
                   f'{edges[lo + i + 1]:.3g}: {int(c)}</title></rect>' for i, c in enumerate(shown))
    labels = (f'<text x="0" y="{height - 2}" font-size="10">{edges[lo]:.3g}</text>'
              f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{edges[hi]:.3g}</text>')
    return f'<svg width="{width}" height="{height}" role="img" aria-label="histogram">{bars}{labels}</svg>'
