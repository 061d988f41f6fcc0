"""Feature extraction speed and memory, as ratios against baselines run in the same process.

1. Throughput: our extraction step (forward to the hook + SAE encode + statistics + top-K) against
   the bare forward up to the hooked layer, on the same batches, alternating batch by batch; total
   time over all batches (so the accumulator's costly first batches, while its top-K fill, count).
   Prints ``extract ours=<tok/s> bare_forward=<tok/s> ratio=<x>``.
2. Against the original study's way (collect every activation, then loop over features in Python:
   numpy/scipy statistics, argsort for the top examples and tokens), on the same 100k tokens; the
   numbers are checked identical. The compiled kernels are loaded before the timing (a one-off
   ~0.3 s per process; the first run on a machine compiles them, ~5 s). Prints
   ``extract_vs_per_feature_loop ratio=<x>``.
3. Memory (``--memory``): peak RSS of full extraction runs in subprocesses at 1x and 4x the tokens.
   Prints ``extract_memory tokens=<n>/<4n> peak_mb=<a>/<b> ratio=<x>``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from saescope.activations.read import sink_mask
from saescope.corpus import load_corpus, windows_with_sources
from saescope.features.accumulator import FeatureAccumulator
from saescope.features.extract import encode_batch
from saescope.model.hooks import forward_until
from saescope.model.loading import load_model
from saescope.sae.formats import load_sae

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads


def batches(lm, n_batches: int, batch_size: int, context: int):
    windows = windows_with_sources(lm.tokenizer, load_corpus("embedded", "train"), context, seed=0)
    for _ in range(n_batches):
        chunk = list(islice(windows, batch_size))
        yield torch.stack([i for i, _ in chunk]), torch.stack([s for _, s in chunk])


def bench_throughput(lm, sae, hook: str, n_batches: int, batch_size: int, context: int) -> None:
    acc = FeatureAccumulator(sae.d_sae, len(lm.tokenizer))
    data = list(batches(lm, n_batches + 1, batch_size, context))
    forward_until(lm.model, [hook], data[0][0])  # warm-up
    encode_batch(lm, sae, hook, *data[0], acc, 0)
    bare, ours = [], []
    for i, (ids, sources) in enumerate(data[1:], start=1):
        start = time.perf_counter()
        forward_until(lm.model, [hook], ids)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        encode_batch(lm, sae, hook, ids, sources, acc, i * batch_size)
        ours.append(time.perf_counter() - start)
    tokens = batch_size * context * len(ours)  # total over the run: the top-K warm-up is included
    ours_rate, bare_rate = tokens / sum(ours), tokens / sum(bare)
    print(f"extract ours={ours_rate:.0f} bare_forward={bare_rate:.0f} ratio={ours_rate / bare_rate:.3f} "
          f"{machine(lm.dtype)}", flush=True)


def per_feature_loop(feats: np.ndarray, token_ids: np.ndarray, top_k: int) -> dict[str, np.ndarray]:
    """The original study's way: one Python iteration per feature over the stored activations."""
    d_sae = feats.shape[1]
    out = {k: np.zeros(d_sae) for k in ("count", "mean", "std", "skewness", "kurtosis", "max")}
    out["top_values"] = np.zeros((d_sae, top_k))
    out["top_tokens"] = []
    for f in range(d_sae):
        column = feats[:, f].astype(np.float64)
        out["count"][f] = (column > 0).sum()
        out["mean"][f], out["std"][f], out["max"][f] = column.mean(), column.std(), column.max()
        out["skewness"][f], out["kurtosis"][f] = scipy.stats.skew(column), scipy.stats.kurtosis(column)
        order = np.argsort(-column, kind="stable")
        out["top_values"][f] = column[order[:top_k]]
        firing = order[column[order] > 0]
        _, first = np.unique(token_ids[firing], return_index=True)
        out["top_tokens"].append(token_ids[firing][np.sort(first)][:10])
    return out


def bench_vs_loop(lm, sae, hook: str, tokens: int, batch_size: int, context: int, top_k: int = 20) -> None:
    data = list(batches(lm, -(-tokens // (batch_size * context)), batch_size, context))
    encoded, sparse = [], []
    for ids, sources in data:  # activations computed once, outside both timings
        acts = forward_until(lm.model, [hook], ids)[hook].float()
        encoded.append((sae.encode(acts), ids, sources, ~sink_mask(acts)))
        sparse.append(sae.encode_sparse(acts.reshape(-1, acts.shape[-1])))
    warm = FeatureAccumulator(sae.d_sae, len(lm.tokenizer), top_k=top_k)  # loads the compiled kernels (once per
    warm.update_sparse(*sparse[0], *encoded[0][1:], 0)                        # process, ~0.3 s), outside the timing
    acc = FeatureAccumulator(sae.d_sae, len(lm.tokenizer), top_k=top_k)
    start = time.perf_counter()
    for i, ((_, ids, sources, keep), (rows, features, values)) in enumerate(zip(encoded, sparse)):
        acc.update_sparse(rows, features, values, ids, sources, keep, i * batch_size)
    acc.stats()
    acc.top_tokens()
    ours = time.perf_counter() - start
    all_feats = torch.cat([f[k] for f, _, _, k in encoded]).numpy()
    all_ids = torch.cat([i[k] for _, i, _, k in encoded]).numpy()
    start = time.perf_counter()
    loop = per_feature_loop(all_feats, all_ids, top_k)
    baseline = time.perf_counter() - start
    stats = {k: v.numpy() for k, v in acc.stats().items()}
    live = stats["count"] > 1
    for key in ("count", "mean", "std", "max"):
        np.testing.assert_allclose(stats[key], loop[key], rtol=1e-4, atol=1e-9, err_msg=key)
    for key in ("skewness", "kurtosis"):
        np.testing.assert_allclose(stats[key][live], loop[key][live], rtol=1e-4, err_msg=key)
    top = acc.sorted_top_examples()["top_values"].clamp_min(0).numpy()
    np.testing.assert_allclose(top, loop["top_values"], rtol=1e-5, atol=1e-6)
    print(f"extract_vs_per_feature_loop tokens={len(all_ids)} ours_s={ours:.2f} loop_s={baseline:.1f} "
          f"ratio={baseline / ours:.1f} identical=yes {machine(lm.dtype)}", flush=True)


def peak_rss_mb(tokens: int, out: Path, dtype: str) -> float:
    code = ("import resource, saescope.cli.main as m, sys; sys.argv=['saescope','features','extract','--out',"
            f"'{out}','--tokens','{tokens}','--dtype','{dtype}']; m.run()")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--loop-tokens", type=int, default=65_536)
    parser.add_argument("--memory", action="store_true", help="also run the 1M vs 4M peak-RSS check (slow)")
    parser.add_argument("--memory-tokens", type=int, default=1_000_000)
    parser.add_argument("--dtype", default="auto", help="model precision: auto (see `saescope info`) | float32 | bfloat16")
    parser.add_argument("--full", action="store_true", help="the long version: 120 batches, 400k loop tokens")
    args = parse_args(parser, {"batches": 2, "batch_size": 2, "context": 16, "loop_tokens": 64})
    if args.full:
        args.batches, args.loop_tokens = 120, 400_000
    torch.set_num_threads(threads())
    lm = load_model(dtype=args.dtype)
    sae = load_sae("default")
    hook = sae.cfg.hook_name
    bench_throughput(lm, sae, hook, args.batches, args.batch_size, args.context)
    bench_vs_loop(lm, sae, hook, args.loop_tokens, args.batch_size, args.context)
    if args.memory:
        tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
        small = peak_rss_mb(args.memory_tokens, tmp / "small", args.dtype)
        large = peak_rss_mb(4 * args.memory_tokens, tmp / "large", args.dtype)  # RUSAGE_CHILDREN: max over both
        print(f"extract_memory tokens={args.memory_tokens}/{4 * args.memory_tokens} peak_mb={small:.0f}/{large:.0f} "
              f"ratio={large / small:.3f} {machine(lm.dtype)}")


if __name__ == "__main__":
    main()
