"""Shared fixtures: the embedded model (loaded once), ../shared/data, tiny random models of other families."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No test may depend on the CPU it runs on: ``--dtype auto`` means float32 here unless the run forces
# another precision (`make test` runs the ``precision`` tier again with SAESCOPE_AUTO_DTYPE=bfloat16).
os.environ.setdefault("SAESCOPE_AUTO_DTYPE", "float32")
AUTO_DTYPE = os.environ["SAESCOPE_AUTO_DTYPE"]
# Under pytest-xdist (`make test` runs two workers) each worker gets its share of the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """The tiers: a test that uses the embedded model (the ``lm`` fixture, or marked ``embedded`` because it
    loads it in a subprocess) is in the ``embedded`` tier; the rest (tiny models, random SAEs, parsers,
    files) is the fast tier, ``make test-fast``."""
    for item in items:
        if "lm" in getattr(item, "fixturenames", ()) or item.get_closest_marker("bench_smoke"):
            item.add_marker(pytest.mark.embedded)


@pytest.fixture(scope="session")
def lm():
    from saescope.model.loading import load_model

    return load_model(dtype="float32")  # exact identities and known answers are checked in float32


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not beside the repository")
    return SHARED_DATA
