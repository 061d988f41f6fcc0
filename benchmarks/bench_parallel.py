"""Data parallel on CPU (torchrun, gloo, 2 processes) against one process, for extraction and SAE training.

Each job runs three times through the real command line:
- one process, one thread: the reference that the 2-process result must equal (same per-batch arithmetic);
- one process with every core's threads: the baseline for the speed-up (the fair one-process figure);
- two processes, one thread each (``--workers 2``).

Prints (times are the jobs' own, without start-up, from the RUN manifest and the SAE's metadata)::

    parallel_extract ranks=2 identical=yes|no speedup=<x> merge_fraction=<x> dtype=... cpu=...
    parallel_train ranks=2 max_abs_diff=<x> speedup=<x> steps=<n> one_process_1_vs_2_threads_diff=<x> dtype=... cpu=...
    cached_extract speedup=<x> count_rel_diff=<x> top1_same=<x> tokens=<n> cache=bfloat16 dtype=... cpu=...

``cached_extract`` is ``features extract --activations`` (reading an activation cache of the default
SAE's hook point) against the one-process run from the model, both with every core: the speed-up,
and how far bfloat16-cached activations move the RUN (relative difference of the firing counts; share
of features whose strongest example is the same token).

``max_abs_diff`` compares the 2-process weights with the one-thread reference. Float rounding differs
(partial sums per rank), and a training run that is not smooth (the loss jumping between steps, as
here on a small cache replayed eight times) amplifies any rounding difference. The same happens
between two one-process runs that differ only in their thread count, so that figure is printed beside
it as the yardstick.

On 2 cores expect a speed-up of at most 2x (usually less: one process already uses both cores for its
matmuls). ``--tokens`` and ``--steps`` scale the jobs (defaults: ~4 min in all on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads

HOOK = "blocks.6.hook_resid_post"
EXTRACT_HOOK = "blocks.12.hook_resid_post"  # the default SAE's


def cli(args: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "saescope.cli.main", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"saescope {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def same_run(a: Path, b: Path) -> bool:
    s1, s2 = pd.read_parquet(a / "stats.parquet"), pd.read_parquet(b / "stats.parquet")
    moments = all(np.allclose(s1[c], s2[c], rtol=1e-6, equal_nan=True) for c in ("mean", "std", "skewness", "kurtosis"))
    counts = (s1["count"] == s2["count"]).all() and (s1["max"] == s2["max"]).all()
    key = ["feature", "activation", "doc_id", "doc_position"]
    e1, e2 = (pd.read_parquet(r / "examples.parquet").drop(columns="rank").sort_values(key).reset_index(drop=True)
              for r in (a, b))
    t1, t2 = (pd.read_parquet(r / "top_tokens.parquet").sort_values(["feature", "token_id"]).reset_index(drop=True)
              for r in (a, b))
    hist = (load_file(a / "histograms.safetensors")["counts"] == load_file(b / "histograms.safetensors")["counts"]).all()
    return bool(moments and counts and e1.equals(e2) and t1.equals(t2) and hist)


def extract(folder: Path, tokens: int, cores: int) -> None:
    common = ["features", "extract", "--sae", "default", "--tokens", str(tokens), "--batch-size", "8"]
    cli([*common, "--out", str(folder / "ref")], threads=1)
    cli([*common, "--out", str(folder / "one")], threads=cores)
    cli([*common, "--workers", "2", "--out", str(folder / "two")], threads=1)
    manifest = {name: json.loads((folder / name / "manifest.json").read_text()) for name in ("one", "two")}
    speedup = manifest["one"]["seconds"] / manifest["two"]["seconds"]
    merge = manifest["two"]["merge_seconds"] / manifest["two"]["seconds"]
    identical = "yes" if same_run(folder / "ref", folder / "two") else "no"
    print(f"parallel_extract ranks=2 identical={identical} speedup={speedup:.2f} merge_fraction={merge:.4f} "
          f"tokens={manifest['two']['tokens']} {machine(manifest['two']['dtype'])}", flush=True)


def extract_from_cache(folder: Path, acts: Path, model_run: Path, tokens: int, cores: int) -> None:
    cli(["features", "extract", "--sae", "default", "--tokens", str(tokens), "--batch-size", "8", "--activations",
         str(acts / EXTRACT_HOOK), "--out", str(folder / "cached")], threads=cores)
    manifest = {r: json.loads((r / "manifest.json").read_text()) for r in (model_run, folder / "cached")}
    s1, s2 = (pd.read_parquet(r / "stats.parquet") for r in (model_run, folder / "cached"))
    count_diff = float((s1["count"] - s2["count"]).abs().sum() / max(1, s1["count"].sum()))
    key = ["doc_id", "doc_position"]
    top1 = [pd.read_parquet(r / "examples.parquet").sort_values("activation", ascending=False)
            .groupby("feature").head(1).set_index("feature")[key].sort_index() for r in (model_run, folder / "cached")]
    shared = top1[0].index.intersection(top1[1].index)
    same = float((top1[0].loc[shared] == top1[1].loc[shared]).all(axis=1).mean())
    speedup = manifest[model_run]["seconds"] / manifest[folder / "cached"]["seconds"]
    print(f"cached_extract speedup={speedup:.2f} count_rel_diff={count_diff:.4f} top1_same={same:.3f} "
          f"tokens={manifest[folder / 'cached']['tokens']} cache={manifest[folder / 'cached']['activations_dtype']} "
          f"{machine(manifest[model_run]['dtype'])}",
          flush=True)


def train(folder: Path, acts: Path, tokens: int, steps: int, cores: int) -> None:
    common = ["sae", "train", "--hook", HOOK, "--activations", str(acts / HOOK), "--features", "2304",
              "--k", "32", "--batch-size", "1024", "--tokens", str(steps * 1024)]
    cli([*common, "--out", str(folder / "ref")], threads=1)
    cli([*common, "--out", str(folder / "one")], threads=cores)
    cli([*common, "--workers", "2", "--out", str(folder / "two")], threads=1)
    ref, one, two = (load_file(folder / name / "sae_weights.safetensors") for name in ("ref", "one", "two"))
    diff = max(float((ref[k] - two[k]).abs().max()) for k in ref)
    threads_diff = max(float((ref[k] - one[k]).abs().max()) for k in ref)  # 1 vs 2 threads, one process
    seconds = {name: json.loads((folder / name / "cfg.json").read_text())["metadata"]["saescope"]["train_seconds"]
               for name in ("one", "two")}
    dtype = json.loads((folder / "two" / "cfg.json").read_text())["metadata"]["saescope"].get("train_dtype", "float32")
    print(f"parallel_train ranks=2 max_abs_diff={diff:.2e} speedup={seconds['one'] / seconds['two']:.2f} "
          f"steps={steps} one_process_1_vs_{cores}_threads_diff={threads_diff:.2e} {machine(dtype)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=24_576, help="tokens extracted / cached for training")
    parser.add_argument("--steps", type=int, default=200, help="training steps of 1,024 tokens")
    args = parse_args(parser, {"tokens": 2048, "steps": 2})
    cores = min(threads(), os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench_parallel_") as tmp:
        folder = Path(tmp)
        extract(folder / "extract", args.tokens, cores)
        cli(["activations", "cache", "--hook", f"{HOOK},{EXTRACT_HOOK}", "--tokens", str(args.tokens), "--out",
             str(folder / "acts")], threads=cores)
        train(folder / "train", folder / "acts", args.tokens, args.steps, cores)
        extract_from_cache(folder / "extract", folder / "acts", folder / "extract" / "one", args.tokens, cores)


if __name__ == "__main__":
    main()
