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
    changes = run.evaluation.changes  # recomputed from the saved scores: the old figures, and CrowS since
    assert {k: changes[k] for k in metrics["changes"]} == pytest.approx(metrics["changes"])
    assert changes["crows_gender"] == pytest.approx(metrics["intervened"]["crows"]["preference"]["gender"])
    met = run.evaluation.targets_met  # judged by today's targets (issue 31's figures), not the old ones
    assert met.keys() == {*metrics["targets_met"], "crows_gender"}
    assert met["abs_pearson_r"] is (metrics["changes"]["abs_pearson_r"] <= 0.15) and not met["mean_abs_dev_reduction"]
    assert list(run.candidates.columns[:2]) == ["candidate", "mean_abs_dev"] and len(run.feature_summary) == 4
