"""What the app serves: RUNs by id (the client never sends a path), the model and SAEs loaded once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun


def run_id(path: Path, taken: set[str]) -> str:
    """A URL-safe id from the folder name, made unique."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", path.resolve().name).strip("-") or "run"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


@dataclass
class AppState:
    """RUNs, reports and the lazily loaded model. Example::

        state = AppState.from_paths([Path("runs/default")], reports=[Path("debias")])
    """

    runs: dict[str, FeatureRun]
    reports: dict[str, Path] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "auto"
    _saes: dict[str, object] = field(default_factory=dict)
    _directions: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_paths(cls, runs: list[Path], reports: list[Path] | None = None, device: str = "cpu",
                   dtype: str = "auto") -> AppState:
        loaded: dict[str, FeatureRun] = {}
        for path in runs:
            loaded[run_id(path, set(loaded))] = FeatureRun.load(path)
        files: dict[str, Path] = {}
        for folder in reports or []:
            if not Path(folder).is_dir():
                raise SaescopeError(f"--reports {folder} is not a folder")
            for html in sorted(Path(folder).glob("*.html")):
                files[run_id(Path(folder) / html.stem, set(files))] = html.resolve()
        if not loaded:
            raise SaescopeError("give at least one features RUN folder")
        return cls(loaded, files, device, dtype)

    def run(self, rid: str) -> FeatureRun:
        if rid not in self.runs:
            raise KeyError(rid)
        return self.runs[rid]

    @cached_property
    def lm(self):
        from saescope.model.loading import EMBEDDED_MODEL, load_model

        first = next(iter(self.runs.values())).manifest
        return load_model(None if first.get("model") in (None, EMBEDDED_MODEL) else first["model"], self.device, self.dtype)

    def sae(self, rid: str):
        """The SAE of RUN ``rid`` (by the name in its manifest), checked against the RUN's fingerprint."""
        if rid not in self._saes:
            from saescope.sae.formats import load_sae

            run = self.run(rid)
            sae = load_sae(run.manifest.get("sae", "default"), device=self.device)
            run.check_sae(sae)
            self._saes[rid] = sae
        return self._saes[rid]

    def neighbours(self, rid: str, feature: int, n: int = 8) -> list[tuple[int, float]]:
        """The ``n`` features whose decoder directions are closest (cosine) to ``feature``'s."""
        if rid not in self._directions:
            with torch.no_grad():
                self._directions[rid] = self.sae(rid).decoder_directions().float().contiguous()
        directions = self._directions[rid]
        cosine = directions @ directions[feature]
        cosine[feature] = -2.0
        values, ids = torch.topk(cosine, n)
        return [(int(i), float(v)) for i, v in zip(ids, values)]
