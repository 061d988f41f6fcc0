"""``DebiasRun``: a debias run end to end (plan on training data, evaluate before/after, summarise the
chosen features) and the folder it is saved as. The CLI only calls ``run_debias`` and ``save``::

    run = run_debias(lm, sae, DebiasConfig(method="erase", layers=[12, 14]))
    run.save("debias")                     # intervention.json, metrics.json, report.html, ...
    again = DebiasRun.load("debias")       # same figures; again.intervention applies as before

Folder: ``intervention.json`` (the chosen intervention; ``edit/`` for a weight change, ``cda``),
``metrics.json`` (``BiasEvaluation.to_dict``),
``features.csv`` (the chosen features), ``selection.csv`` (every candidate's training-data scores),
``debias.json`` (method, candidate, features, settings, precision) and ``report.html``. Folders written
before ``debias.json`` existed load too (their method and candidate are then unknown).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from saescope.bias.data import BiasData, SelectionPrompts
from saescope.bias.debias.config import DebiasConfig
from saescope.bias.debias.plan import plan_debias
from saescope.bias.evaluation import BiasEvaluation, evaluate
from saescope.bias.outputs import write_results
from saescope.bias.summary import features_summary
from saescope.editing.weight_edit import load_applicable
from saescope.errors import SaescopeError
from saescope.features.run import FeatureRun
from saescope.model.hooks import Applicable
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.storage import read_json

FILES = ("intervention.json", "metrics.json", "features.csv", "selection.csv", "report.html")


@dataclass
class DebiasRun:
    """What ``saescope bias debias`` computes and writes."""

    method: str
    candidate: str  # the chosen candidate's label
    features: list[int]
    intervention: Applicable  # an Intervention, or a WeightDelta (cda)
    evaluation: BiasEvaluation
    feature_summary: pd.DataFrame = field(repr=False)
    candidates: pd.DataFrame = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)  # config, SAE name, precision

    def to_dict(self) -> dict[str, Any]:
        """The evaluation and what was chosen (what ``--json`` prints)."""
        return {**self.evaluation.to_dict(), "method": self.method, "features": self.features,
                "candidate": self.candidate}

    def save(self, out: str | Path) -> Path:
        """Write the folder (atomically: an earlier folder is replaced only once everything is written)."""
        report_settings = {"method": self.method, "features": ",".join(map(str, self.features)) or "(none)",
                           "candidate": self.candidate, "SAE": self.settings.get("sae", ""),
                           "precision": self.settings.get("precision", {}).get("dtype", self.evaluation.dtype)}
        record = {"format": "saescope-debias/1", "method": self.method, "candidate": self.candidate,
                  "features": self.features, "settings": self.settings}
        return write_results(out, self.evaluation, f"saescope bias debias --method {self.method}", self.intervention,
                             self.feature_summary, self.candidates, report_settings, {"debias.json": record})

    @classmethod
    def load(cls, out: str | Path) -> DebiasRun:
        """Read a folder ``save`` (or ``saescope bias debias --out``) wrote."""
        out = Path(out)
        if not out.is_dir():
            raise SaescopeError(f"{out} is not a debias folder (expected a folder with {', '.join(FILES)})")
        record = read_json(out / "debias.json", "debias record") if (out / "debias.json").exists() else {}
        try:
            evaluation = BiasEvaluation.from_dict(read_json(out / "metrics.json", "bias metrics"))
        except (KeyError, TypeError) as exc:
            raise SaescopeError(f"{out / 'metrics.json'} is not a bias evaluation ({type(exc).__name__}: {exc})") from None
        return cls(record.get("method", "unknown"), record.get("candidate", "unknown"),
                   [int(f) for f in record.get("features", [])], load_applicable(_applied(out)),
                   evaluation, _csv(out / "features.csv"), _csv(out / "selection.csv"), record.get("settings", {}))


def _applied(out: Path) -> Path:
    """The saved intervention (``intervention.json``) or weight change (``edit/``) of a folder."""
    return out / "edit" if (out / "edit").is_dir() and not (out / "intervention.json").exists() else out / "intervention.json"


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SaescopeError(f"cannot read {path} ({type(exc).__name__}: {exc})") from None


def run_debias(lm: LoadedModel, sae: SAE, config: DebiasConfig | str | None = None, *, data: BiasData | None = None,
               feature_run: FeatureRun | None = None, ce_tokens: int = 8192, sae_name: str = "",
               selection: SelectionPrompts | None = None, progress: bool = True, generate: int = 0,
               table: pd.DataFrame | None = None) -> DebiasRun:
    """Plan on training data only (``plan_debias``), then evaluate the plain and the intervened model on
    the evaluation benchmarks (``data``, default the shipped ones). ``feature_run`` adds top tokens and
    explanations to the features table; ``selection`` replaces the shipped selection prompts (``table``
    reuses their ranking, see ``plan_debias``); ``generate`` > 0 also scores the pronouns of that many
    sampled continuations per prompt (``bias.generated``)."""
    config = DebiasConfig(method=config) if isinstance(config, str) else config or DebiasConfig()
    plan = plan_debias(lm, sae, config, selection=selection, table=table)
    summary = features_summary(lm, sae, plan.feature_table, plan.features, feature_run)
    evaluation = evaluate(lm, plan.intervention, data, ce_tokens=ce_tokens, progress=progress, generate=generate)
    settings = {"config": asdict(config), "sae": sae_name, "precision": plan.precision, "ce_tokens": ce_tokens,
                "training_twins": plan.twins}
    return DebiasRun(plan.method, plan.candidate, list(plan.features), plan.intervention, evaluation, summary,
                     plan.candidates, settings)
