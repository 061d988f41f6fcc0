"""``DebiasConfig``: how ``debias`` builds its candidates (light: the CLI imports it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saescope.errors import SaescopeError

METHODS = ("ablate", "cap", "circuit", "erase", "steer")
LEGACY_METHODS = {"clamp": "cap", "project": "erase"}


@dataclass
class DebiasConfig:
    """How ``debias`` builds its candidates (``saescope debias`` builds its options from these fields)."""

    method: str = "erase"
    """ablate | cap | circuit | erase | steer (see the module docstring of bias.debias)."""
    features: str = "auto"
    """'auto' (chosen on training prompts) or comma-separated feature ids."""
    strengths: str | None = None
    """Candidate strengths, comma-separated: feature counts (ablate, cap), fractions of the centering
    coefficient (steer) or erasure fractions (erase); default: a built-in grid."""
    hook: str | None = None
    """Hook point of the SAE; default: the one the SAE names."""
    layers: str | None = None
    """erase only: candidate layers, comma-separated (each at or after the SAE's layer); default: the
    SAE's layer and the next three even steps (+2, +4, +6)."""
    suite: str = "default"
    """circuit only: the SAE suite the circuit is found over ('default' = the shipped one, or a folder)."""

    def __post_init__(self) -> None:
        self.method = LEGACY_METHODS.get(self.method, self.method)
        if self.method not in METHODS:
            raise SaescopeError(f"unknown debias method {self.method!r}: use one of {', '.join(METHODS)}")
        self.feature_ids  # noqa: B018 - validates
        self.grid  # noqa: B018
        self.layer_ids  # noqa: B018

    @property
    def feature_ids(self) -> str | list[int]:
        """``"auto"`` or the feature ids."""
        if self.features == "auto":
            return "auto"
        ids = _numbers(self.features, "features", int)
        if not ids:
            raise SaescopeError("features needs 'auto' or at least one feature id")
        return ids

    @property
    def layer_ids(self) -> list[int] | None:
        return _numbers(self.layers, "layers", int) if self.layers else None

    @property
    def grid(self) -> list[float] | None:
        return _numbers(self.strengths, "strengths", float) if self.strengths else None


def _numbers(text: str, what: str, kind: type) -> list:
    try:
        return [kind(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise SaescopeError(f"{what} must be comma-separated numbers, got {text!r}") from None


@dataclass
class BiasDataFiles:
    """Replacements for the shipped evaluation data of ``bias eval`` (``None``: the shipped file)."""

    occupations: Path | None = None
    """TSV with columns occupation, bls_pct_female."""
    winobias: Path | None = None
    """Folder with pro/anti_stereotyped_type{1,2}*.txt."""
    crows: Path | None = None
    """CrowS-Pairs CSV (sent_more, sent_less, stereo_antistereo, bias_type)."""
    agreement: Path | None = None
    """Subject-verb agreement JSONL file or folder."""
    definitional: Path | None = None
    """Definitional-gender prompts (JSON, see data/bias/prompts)."""

    def load(self) -> Any:
        """The ``bias.data.BiasData`` these files (or the shipped ones) hold."""
        from saescope.bias.data import BiasData

        return BiasData.load(self.occupations, self.winobias, self.crows, self.agreement, self.definitional)
