"""A small RUN of the bundled SAE (the app loads the SAE its manifest names), with baseline explanations,
and a report folder."""

import pytest

from saescope.autointerp.explain import explain_features
from saescope.features.extract import extract_features
from saescope.sae.formats import load_sae


@pytest.fixture(scope="module")
def app_run(lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    run = extract_features(lm, load_sae("default"), root / "run", tokens=2048, batch_size=8, context=64, top_k=5,
                           progress=False)
    explain_features(run, list(range(64)), None, progress=False)
    reports = root / "reports"
    reports.mkdir()
    (reports / "bias report.html").write_text("<!doctype html><title>bias</title><h1 id='bias'>Bias report</h1>")
    return run, reports
