"""What the app serves: RUNs by id (the client never sends a path), the model and SAEs loaded once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun

GRAPH_FILES = ("graph.json", "graph.safetensors", "graph-neuronpedia.json")


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
    graphs: dict[str, Path] = field(default_factory=dict)  # folders written by `saescope graph attribute`
    device: str = "cpu"
    dtype: str = "auto"
    _saes: dict[str, object] = field(default_factory=dict)
    _directions: dict[str, torch.Tensor] = field(default_factory=dict)
    _transcoders: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_paths(cls, runs: list[Path], reports: list[Path] | None = None, device: str = "cpu",
                   dtype: str = "auto", graphs: list[Path] | None = None) -> AppState:
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
        folders: dict[str, Path] = {}
        for folder in graphs or []:
            for name in GRAPH_FILES:
                if not (Path(folder) / name).is_file():
                    raise SaescopeError(f"--graphs {folder} is not a graph folder (saescope graph attribute): no {name}")
            folders[run_id(Path(folder), set(folders))] = Path(folder).resolve()
        return cls(loaded, files, folders, device, dtype)

    def graph(self, gid: str) -> tuple[dict, dict]:
        """Graph ``gid``'s ``graph.json`` (prompt, tokens, info) and its pruned Neuronpedia JSON."""
        from saescope.storage import read_json

        folder = self.graphs[gid]
        return read_json(folder / "graph.json", "graph file"), read_json(folder / "graph-neuronpedia.json", "graph file")

    def transcoders(self, gid: str):
        """The transcoder set graph ``gid`` was attributed with (its ``info.transcoders_path``), checked
        against the app's model."""
        if gid not in self._transcoders:
            from saescope.sae.transcoders import load_transcoders

            path = self.graph(gid)[0].get("info", {}).get("transcoders_path")
            if not path:
                raise SaescopeError(f"graph {gid!r} does not name its transcoder set: attribute it again with this "
                                    "version of saescope graph attribute")
            transcoders = load_transcoders(path, self.device)
            transcoders.check_model(self.lm)
            self._transcoders[gid] = transcoders
        return self._transcoders[gid]

    def feature_links(self, gid: str) -> dict[str, str]:
        """Per graph layer, the feature-page URL template of a RUN extracted with that layer's transcoder
        (``features extract --sae TRANSCODERS/layer_L.safetensors``), where one is loaded."""
        path = self.graph(gid)[0].get("info", {}).get("transcoders_path")
        if not path:
            return {}
        links = {}
        for rid, run in self.runs.items():
            sae = Path(str(run.manifest.get("sae", "")))
            if sae.parent.resolve() == Path(path).resolve() and (match := re.fullmatch(r"layer_(\d+)\.safetensors", sae.name)):
                links[match.group(1)] = f"/runs/{rid}/features/{{feature}}"
        return links

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
