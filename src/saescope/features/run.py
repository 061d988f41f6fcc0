"""A features RUN folder: Parquet tables + a JSON manifest, written by extraction, read by everything else.

Files: ``manifest.json`` (written last: a run is complete when it exists), ``stats.parquet`` (one row
per feature), ``examples.parquet`` (top-K activating contexts), ``top_tokens.parquet``,
``logit_effects.parquet``, ``histograms.safetensors`` (counts [d_sae, bins] and bin edges).
"""

from __future__ import annotations

import math
import platform
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from saescope.corpus import Document
from saescope.errors import SaescopeError
from saescope.features.accumulator import HIST_EDGES, FeatureAccumulator
from saescope.features.explanations import explanation_label
from saescope.features.logit_effects import logit_effects
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE, check_feature_id, sae_fingerprint
from saescope.storage import atomic_path, read_json, write_json
from saescope.version import __version__

TOP_TOKENS_IN_STATS = 10
RUN_FILES = ("stats.parquet", "examples.parquet", "top_tokens.parquet", "logit_effects.parquet",
             "histograms.safetensors")


class FeatureRun:
    """A finished extraction. ``stats`` is a DataFrame with one row per feature.

    Example::

        run = FeatureRun.load("runs/default")
        run.stats.sort_values("log10_density").tail()
        run.examples(123)[["activation", "token", "context"]]
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path, self.manifest = path, manifest

    @classmethod
    def load(cls, path: str | Path) -> FeatureRun:
        path = Path(path)
        if not (path / "manifest.json").exists():
            hint = " (unfinished: run extract again with --resume)" if (path / "checkpoint").exists() else ""
            raise SaescopeError(f"{path} is not a features run: no manifest.json{hint}")
        manifest = read_json(path / "manifest.json", "RUN manifest")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("d_sae"), int) or manifest["d_sae"] <= 0:
            raise SaescopeError(f"{path / 'manifest.json'}: field 'd_sae' must be a positive integer "
                                "(the manifest is damaged: extract the RUN again)")
        missing = [name for name in RUN_FILES if not (path / name).is_file()]
        if missing:
            raise SaescopeError(f"{path} is an incomplete features run: {', '.join(missing)} missing "
                                "(extract it again into a new folder)")
        return cls(path, manifest)

    @property
    def d_sae(self) -> int:
        return int(self.manifest["d_sae"])

    def check_feature(self, feature: int) -> int:
        return check_feature_id(feature, self.d_sae, "this run")

    def check_sae(self, sae: SAE) -> None:
        """Raise unless this run was made with ``sae``."""
        if self.manifest.get("sae_fingerprint") != sae_fingerprint(sae):
            raise SaescopeError(f"{self.path} was extracted with another SAE ({self.manifest.get('sae')})")

    def read_table(self, name: str) -> pd.DataFrame:
        try:
            return pd.read_parquet(self.path / name)
        except (OSError, ValueError) as exc:
            raise SaescopeError(f"cannot read {self.path / name}: damaged or not Parquet ({type(exc).__name__}); "
                                "extract the RUN again") from None

    def optional_table(self, name: str) -> pd.DataFrame | None:
        """A table other commands add to the RUN (``samples.parquet``, ``explanations.parquet``, ``scores.parquet``),
        or ``None`` when it has not been made."""
        return self.read_table(name) if (self.path / name).is_file() else None

    def samples_of(self, feature: int) -> pd.DataFrame | None:
        """``feature``'s rows of ``samples.parquet`` (``features sample``), or ``None`` when the RUN has no
        samples. The table is read and grouped once per version of the file, not once per feature."""
        path = self.path / "samples.parquet"
        stamp = path.stat().st_mtime_ns if path.is_file() else 0
        if getattr(self, "_samples", (None,))[0] != stamp:
            table = self.optional_table("samples.parquet")
            self._samples = (stamp, table, None if table is None else table.groupby("feature").indices)
        _, table, rows = self._samples
        return None if table is None else table.iloc[rows.get(feature, np.empty(0, dtype=np.int64))]

    @cached_property
    def stats(self) -> pd.DataFrame:
        table = self.read_table("stats.parquet")
        if len(table) != self.d_sae:
            raise SaescopeError(f"{self.path / 'stats.parquet'} has {len(table)} rows, the manifest says "
                                f"d_sae={self.d_sae}: the RUN is damaged")
        return table

    @cached_property
    def all_examples(self) -> pd.DataFrame:
        return self.read_table("examples.parquet")

    @cached_property
    def top_tokens(self) -> pd.DataFrame:
        return self.read_table("top_tokens.parquet")

    @cached_property
    def logit_effects(self) -> pd.DataFrame:
        return self.read_table("logit_effects.parquet")

    @cached_property
    def histograms(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts [d_sae, bins], edges [bins + 1])`` of the non-zero activations."""
        try:
            data = load_file(str(self.path / "histograms.safetensors"))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
            raise SaescopeError(f"cannot read {self.path / 'histograms.safetensors'} ({type(exc).__name__}): "
                                "extract the RUN again") from None
        return data["counts"].numpy(), data["edges"].numpy()

    def explanations(self) -> dict[int, list[dict[str, Any]]]:
        """Feature -> its explanations (``saescope explain``), each with its scores on the real explanation
        (``saescope score``, control 'none'): ``{"explainer", "model", "explanation", "error", "scores",
        "intervals"}``, ``scores[scorer]`` a number and ``intervals[scorer]`` its 95 % interval ``(low, high)``.
        Read again only when one of the two files changes."""
        stamp = tuple((self.path / n).stat().st_mtime_ns if (self.path / n).is_file() else 0
                      for n in ("explanations.parquet", "scores.parquet"))
        if getattr(self, "_explained", (None,))[0] != stamp:
            self._explained = (stamp, self._read_explanations())
        return self._explained[1]

    def _read_explanations(self) -> dict[int, list[dict[str, Any]]]:
        table, scores = self.optional_table("explanations.parquet"), self.optional_table("scores.parquet")
        if table is None:
            return {}
        by_key: dict[tuple, dict[str, float]] = {}
        spans: dict[tuple, dict[str, tuple[float, float]]] = {}
        if scores is not None:
            for r in scores[scores.control == "none"].itertuples():
                key = (r.feature, r.explainer, r.explainer_model)
                by_key.setdefault(key, {})[r.scorer] = float(r.score)
                low, high = float(getattr(r, "score_low", math.nan)), float(getattr(r, "score_high", math.nan))
                if math.isfinite(low) and math.isfinite(high):  # older RUNs and too few items have none
                    spans.setdefault(key, {})[r.scorer] = (low, high)
        out: dict[int, list[dict[str, Any]]] = {}
        for r in table.itertuples():
            key = (r.feature, r.explainer, r.model)
            out.setdefault(int(r.feature), []).append({
                "explainer": r.explainer, "model": r.model, "explanation": r.explanation, "error": r.error,
                "scores": by_key.get(key, {}), "intervals": spans.get(key, {})})
        return out

    def explanation_labels(self, features: list[int]) -> list[str]:
        """``explanation_label`` of each feature: what the app, dashboards, circuits and bias tables show
        beside a feature id."""
        explained = self.explanations()
        return [explanation_label(explained.get(int(f), [])) for f in features]

    @cached_property
    def _rows_by_feature(self) -> dict[str, dict[int, np.ndarray]]:
        """Row positions of each feature in the per-feature tables (built once: lookups stay O(rows of f))."""
        return {name: table.groupby("feature").indices for name, table in
                (("examples", self.all_examples), ("top_tokens", self.top_tokens), ("logit_effects", self.logit_effects))}

    def rows_of(self, name: str, feature: int) -> pd.DataFrame:
        """The rows of ``feature`` in the table ``name`` (examples, top_tokens or logit_effects)."""
        table = {"examples": self.all_examples, "top_tokens": self.top_tokens, "logit_effects": self.logit_effects}[name]
        index = self._rows_by_feature[name].get(feature, np.empty(0, dtype=np.int64))
        return table.iloc[index]

    @cached_property
    def _rows_by_token(self) -> dict[str, np.ndarray]:
        return self.top_tokens.groupby("token").indices

    def rows_of_token(self, token: str) -> np.ndarray:
        """Row positions in ``top_tokens`` of the features whose top tokens include ``token``."""
        return self._rows_by_token.get(token, np.empty(0, dtype=np.int64))

    def examples(self, feature: int) -> pd.DataFrame:
        """The top activating examples of ``feature``, strongest first."""
        feature = self.check_feature(feature)
        return self.rows_of("examples", feature).sort_values("rank").reset_index(drop=True)

    def feature(self, feature: int) -> dict[str, Any]:
        """Everything about one feature: stats row, examples, top tokens, logit effects, histogram."""
        feature = self.check_feature(feature)
        counts, edges = self.histograms
        effects = self.rows_of("logit_effects", feature)
        return {"stats": self.stats.iloc[feature].to_dict(), "examples": self.examples(feature),
                "top_tokens": self.rows_of("top_tokens", feature).reset_index(drop=True),
                "promoted": effects[effects.kind == "promoted"].reset_index(drop=True),
                "suppressed": effects[effects.kind == "suppressed"].reset_index(drop=True),
                "histogram": (counts[feature], edges)}


def write_run(out: Path, acc: FeatureAccumulator, lm: LoadedModel, sae: SAE, docs: list[Document],
              manifest: dict[str, Any]) -> None:
    """Write every table of a run from a finished accumulator, each atomically, the manifest last."""
    decode = TokenDecoder(lm.tokenizer)
    top_feature, top_token, top_max = acc.top_tokens()
    tokens_table = pd.DataFrame({"feature": top_feature.numpy(), "token_id": top_token.numpy(),
                                 "token": decode.many(top_token), "max_activation": top_max.numpy()})
    tokens_table["rank"] = tokens_table.groupby("feature").cumcount()
    stats = pd.DataFrame({k: v.numpy() for k, v in acc.stats().items()})
    stats.insert(0, "feature", np.arange(acc.d_sae))
    best = tokens_table[tokens_table["rank"] < TOP_TOKENS_IN_STATS].groupby("feature")["token"].agg(list)
    stats["top_tokens"] = [best.get(f, []) for f in range(acc.d_sae)]
    write_parquet(out / "stats.parquet", stats)
    write_parquet(out / "top_tokens.parquet", tokens_table)
    write_parquet(out / "examples.parquet", _examples_table(acc, docs, decode))
    write_parquet(out / "logit_effects.parquet", _logit_table(lm, sae, decode))
    with atomic_path(out / "histograms.safetensors") as tmp:
        save_file({"counts": acc.state["hist"].contiguous(), "edges": HIST_EDGES.clone()}, str(tmp))
    import transformers

    versions = {"saescope": __version__, "torch": torch.__version__,
                "transformers": transformers.__version__, "python": platform.python_version()}
    write_json(out / "manifest.json", {**manifest, "versions": versions})


def _examples_table(acc: FeatureAccumulator, docs: list[Document], decode: TokenDecoder) -> pd.DataFrame:
    s = acc.sorted_top_examples()
    d_sae, top_k, width = s["top_context_ids"].shape
    valid = torch.isfinite(s["top_values"])  # [d_sae, K]
    feature, rank = valid.nonzero(as_tuple=True)
    context_ids = s["top_context_ids"][feature, rank]  # [n, C]
    center = acc.context_left  # index of the example token in the context
    sources = s["top_source"][feature, rank]
    locations = s["top_location"][feature, rank]
    context_tokens = [[decode.one(int(t)) for t in row if t >= 0] for row in context_ids.tolist()]
    first_valid = (context_ids >= 0).int().argmax(dim=1)
    context_acts = [row[mask].tolist() for row, mask in zip(s["top_context_acts"][feature, rank], context_ids >= 0)]
    return pd.DataFrame({
        "feature": feature.numpy(), "rank": rank.numpy(), "activation": s["top_values"][feature, rank].numpy(),
        "token": [decode.one(int(t)) for t in context_ids[:, center]],
        "doc_id": [docs[int(i)].doc_id for i in sources[:, 0]], "doc_position": sources[:, 1].numpy(),
        "window": locations[:, 0].numpy(), "position": locations[:, 1].numpy(),
        "context_tokens": context_tokens, "context_acts": context_acts,
        "center": (center - first_valid).numpy(),
    })


def _logit_table(lm: LoadedModel, sae: SAE, decode: TokenDecoder) -> pd.DataFrame:
    up, up_ids, down, down_ids = logit_effects(lm, sae)
    n = up.shape[1]
    frames = []
    for kind, values, ids in (("promoted", up, up_ids), ("suppressed", down, down_ids)):
        frames.append(pd.DataFrame({"feature": np.repeat(np.arange(sae.d_sae), n), "kind": kind,
                                    "rank": np.tile(np.arange(n), sae.d_sae), "token_id": ids.flatten().numpy(),
                                    "token": decode.many(ids.flatten()), "value": values.flatten().numpy()}))
    return pd.concat(frames, ignore_index=True)


def write_parquet(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


class TokenDecoder:
    """Token id -> its text, decoding each distinct id once."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def one(self, token_id: int) -> str:
        if token_id not in self.cache:
            self.cache[token_id] = self.tokenizer.decode([token_id])
        return self.cache[token_id]

    def many(self, ids: torch.Tensor) -> list[str]:
        return [self.one(int(t)) for t in ids.tolist()]
