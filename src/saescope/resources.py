"""Files shipped inside the package (data sets, the bundled SAE, pair sets, prompts, report templates)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    """The path of ``saescope/data/<parts...>``. Example: ``data_path("pairs", "gender_train.jsonl")``."""
    return Path(str(resources.files("saescope").joinpath("data", *parts)))


def shipped_or_path(name: str, folder: str, suffix: str) -> Path:
    """A shipped file ``data/<folder>/<name><suffix>`` if ``name`` names one, else ``name`` as a path."""
    shipped = data_path(folder, f"{name}{suffix}")
    return shipped if shipped.is_file() else Path(name)
