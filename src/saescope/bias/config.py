"""``BiasDataFiles``: replacement evaluation data for ``bias eval`` and ``debias`` (light: the CLI imports it
at start-up). ``DebiasConfig`` lives in ``bias.debias.config``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
