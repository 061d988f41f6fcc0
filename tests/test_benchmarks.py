"""Every benchmark runs: each script in ``benchmarks/`` in its ``--smoke`` mode (tiny sizes, seconds)
prints every line it prints in a full run, each ``name key=value ...`` with the precision and the CPU.

A refactor that breaks a benchmark (as distributed training once broke ``bench_train.py``) fails here,
not weeks later in ``make bench``. The figures of a smoke run mean nothing and are not checked.
``make test`` runs this file on its own with two workers (it is marked ``bench_smoke``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {  # script -> the lines it must print (by their first word)
    "bench_interop": ["saelens_loads_ours"],
    "bench_train": ["train_sae_fvu", "train_sae"],
    "bench_extract": ["extract", "extract_vs_per_feature_loop"],
    "bench_steer": ["steer_set", "steer", "decode_bandwidth", "steer_vs_nocache"],
    "bench_contrast": ["contrast_fit"],
    "bench_bias": ["bias_eval_speed"],
    "bench_circuits": ["circuit_ig_vs_patching", "circuit_faithfulness", "circuit_speed"],
    "bench_edit": ["gender_vector_direction", "rome", "gender_vector", "rome_speed"],
    "bench_autointerp": ["autointerp_embedding", "autointerp_detection", "autointerp_fuzzing", "autointerp_speed"],
    "bench_app": ["app_load"],
    "bench_parallel": ["parallel_extract", "parallel_train", "cached_extract"],
    "bench_precision": ["precision"],
    "bench_saebench": ["saebench", "saebench_speed", "synth"],
    "bench_graphs": ["transcoders", "graph_attribute", "graph_vs_exact", "graph_vs_circuit_tracer", "graph_json_mb"],
}
LINE = re.compile(r"^([a-z_0-9]+)((?: [A-Za-z_0-9/.]+=\S+)+)\s*$")


def test_every_benchmark_is_listed():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert scripts == set(EXPECTED)
    make = (ROOT / "Makefile").read_text()
    assert all(f"benchmarks/{name}.py" in make for name in scripts)  # make bench runs them all


@pytest.mark.bench_smoke
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_benchmark_smoke(script):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // workers))}  # two at once: one thread each
    done = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {}
    for line in done.stdout.splitlines():
        match = LINE.match(line)
        if match:
            lines.setdefault(match.group(1), []).append(line)
    missing = [name for name in EXPECTED[script] if name not in lines]
    assert not missing, f"{script} did not print {missing}:\n{done.stdout[-3000:]}"
    for name in EXPECTED[script]:
        assert all(" dtype=" in line and " cpu=" in line for line in lines[name]), lines[name]
