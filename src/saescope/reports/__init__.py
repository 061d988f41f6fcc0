"""Rendering shared by every report: one jinja environment over ``reports/templates`` and one
matplotlib helper that saves a figure (PNG file, atomically) or returns it as inline SVG text."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from saescope.storage import atomic_path


@cache
def environment() -> jinja2.Environment:
    """The jinja environment of saescope's HTML templates (autoescaped)."""
    return jinja2.Environment(loader=jinja2.PackageLoader("saescope", "reports/templates"),
                              autoescape=jinja2.select_autoescape(["html"]))


def render(template: str, **context: Any) -> str:
    """Render ``reports/templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)


def figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    """A new matplotlib figure and axes on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def save_png(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def svg_text(fig: Any) -> str:
    """``fig`` as inline ``<svg>`` text (for self-contained HTML), and close it."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]
