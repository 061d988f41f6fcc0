"""Files written by the release before the house moved (tests/compat/release-0.1, written by commit
28c7bf4 with ``saescope debias``, ``edit rome``, ``circuit find`` and ``extract_features``) load and give
the numbers that release gave (``expected.json``, written by ``probes.py`` running on it)."""

from __future__ import annotations

import json

import pytest

from compat.probes import FILES, probes
from saescope.storage import read_json


def test_old_files_give_the_old_numbers(lm):
    expected = json.loads((FILES / "expected.json").read_text())
    got = probes(lm)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name


def test_an_old_debias_folder_loads_as_a_debias_run():
    from saescope.bias.debias import DebiasRun

    run = DebiasRun.load(FILES / "debias")
    metrics = read_json(FILES / "debias" / "metrics.json")
    assert run.method == "unknown" and run.features == []  # written before debias.json existed
    assert run.evaluation.changes == pytest.approx(metrics["changes"])
    assert run.evaluation.targets_met == metrics["targets_met"]
    assert list(run.candidates.columns[:2]) == ["candidate", "mean_abs_dev"] and len(run.feature_summary) == 4
