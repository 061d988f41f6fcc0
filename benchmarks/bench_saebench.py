"""SAEBench-compatible evals of the shipped SAE, and the synthetic ground-truth check of the architectures.

1. ``saescope.bench_sae`` runs core (``--tokens`` held-out tokens), sparse_probing, scr, tpp, absorption and
   meta_structure on the bundled SAE (SmolLM2-135M layer 12, TopK k=48, 4,608 latents) and prints one line
   per eval, then the wall time of the suite (``saebench_speed``). SAEBench's own code cannot run here (it
   needs the hub and TransformerLens' model list), so there is no "theirs" time.
2. ``sae.bench.synthetic.recovery`` trains TopK, BatchTopK and Matryoshka BatchTopK on a synthetic world
   with known (hierarchical) features, at equal width and L0, and prints F1 and MCC of the recovered
   features (``synth``), over ``--seeds`` worlds.

Measured in float32 (``--dtype auto`` resolves as every measurement command does). About 6 min on 2 cores.

Usage: ``python benchmarks/bench_saebench.py [--tokens 50000] [--synth-steps 2000] [--seeds 1]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--synth-steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    args = parse_args(parser, {"tokens": 512, "synth_steps": 30, "seeds": 1})
    options = {"meta_structure": {"steps": 20}, "absorption": {"words_per_letter": 15}} if args.smoke else {}

    import numpy as np
    import torch

    from saescope import load_model
    from saescope.precision import MEASURE, resolve_dtype
    from saescope.sae.bench.run import EVALS, bench_sae
    from saescope.sae.bench.synthetic import World, recovery
    from saescope.sae.formats import load_sae

    torch.set_num_threads(threads())
    dtype = resolve_dtype(args.dtype, "cpu", MEASURE)
    tail = machine(dtype)
    lm = load_model(dtype=dtype)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        table = bench_sae(lm, {"default": load_sae("default")}, list(EVALS), out, tokens=args.tokens, progress=False,
                          options=options)
    seconds = time.perf_counter() - started
    row = table.iloc[0]
    fields = {
        "core": {"ce_loss_score": "core.model_performance_preservation.ce_loss_score",
                 "explained_variance_centred": "core.reconstruction_quality.explained_variance",
                 "explained_variance_legacy": "core.reconstruction_quality.explained_variance_legacy",
                 "l0": "core.sparsity.l0", "frac_alive": "core.misc_metrics.frac_alive"},
        "sparse_probing": {"llm_acc": "sparse_probing.llm.llm_test_accuracy",
                           "sae_top1": "sparse_probing.sae.sae_top_1_test_accuracy",
                           "sae_top5": "sparse_probing.sae.sae_top_5_test_accuracy"},
        "scr": {f"scr_n{n}": f"scr.scr_metrics.scr_metric_threshold_{n}" for n in (2, 10, 50)},
        "tpp": {f"tpp_n{n}": f"tpp.tpp_metrics.tpp_threshold_{n}_total_metric" for n in (2, 10, 50)},
        "absorption": {"mean_absorption_fraction": "absorption.mean.mean_absorption_fraction_score",
                       "full_absorption": "absorption.mean.mean_full_absorption_score",
                       "split_features": "absorption.mean.mean_num_split_features"},
        "meta_structure": {"decoder_fve": "meta_structure.meta_structure.decoder_fraction_variance_explained"},
    }
    for name, columns in fields.items():
        figures = " ".join(f"{key}={row[column]:.4f}" for key, column in columns.items())
        print(f"saebench sae=default eval={name} {figures} {tail}", flush=True)
    print(f"saebench_speed tokens={args.tokens} ours_s={seconds:.1f} evals={len(EVALS)} {tail}", flush=True)

    results: dict[str, list[dict]] = {}
    for seed in range(args.seeds):
        for result in recovery(steps=args.synth_steps, world=World.make(seed=seed), seed=seed):
            results.setdefault(str(result["arch"]), []).append(result)
    for arch, runs in results.items():
        mean = {key: float(np.mean([r[key] for r in runs])) for key in ("f1", "mcc", "precision", "recall", "l0")}
        print(f"synth arch={arch} f1={mean['f1']:.3f} mcc={mean['mcc']:.3f} precision={mean['precision']:.3f} "
              f"recall={mean['recall']:.3f} l0={mean['l0']:.2f} seeds={len(runs)} steps={args.synth_steps} "
              f"dtype=float32 cpu={tail.split('cpu=')[1]}", flush=True)


if __name__ == "__main__":
    main()
