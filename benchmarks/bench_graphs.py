"""Transcoders and attribution graphs on the embedded model.

1. ``transcoders``: the set given by ``--transcoders`` (or one trained here on ``--train-tokens`` tokens,
   every layer, 1,152 features, k = 16), evaluated on ``--eval-tokens`` held-out tokens: the median
   MLP-output FVU over layers, and the CE increase with every MLP replaced.
2. ``graph_attribute``: the graph of "The nurse said that" (every active feature's row) with its size, time
   and circuit-tracer's replacement and completeness scores.
3. ``graph_vs_exact``: circuit-tracer 0.5 cannot run here (it knows no SmolLM2 configuration for its
   TransformerLens or nnsight backends and needs the hub), so 40 random edges of that graph are checked
   against an exact per-edge computation instead: the target recomputed by forward passes in the frozen
   replacement model (norm scales and attention inputs replayed from the prompt, ``replacement.Frozen``)
   with and without the source; Pearson r and the largest difference.
4. ``graph_json_mb``: a 64-token prompt with a ``--budget`` of feature rows: seconds, and the size of the
   pruned Neuronpedia JSON.

Usage: ``python benchmarks/bench_graphs.py [--transcoders DIR] [--train-tokens 100000]`` (≤ 10 min on 2
cores with a trained set given; training adds about 4 min per 100,000 tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads

LONG = ("The nurse walked into the room and checked on the patient before the doctor arrived. The doctor asked "
        "the nurse about the new medicine and the results of the morning tests. After a short talk in the hall, "
        "the engineer who had fixed the heating and the old machines on the third floor came in, sat down, "
        "looked around and said that")


def exact_edges(lm, transcoders, graph, n: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """``n`` random feature → feature / logit edges, each recomputed by removing its source."""
    import torch

    from saescope.circuits.attribution_graph import read_prompt
    from saescope.circuits.replacement import Frozen, linearised

    ids = torch.tensor(graph.tokens)
    read = read_prompt(lm.model, transcoders, ids)
    generator = torch.Generator().manual_seed(seed)
    targets, sources = graph.adjacency[:, :graph.n_features].nonzero(as_tuple=True)
    picks = torch.randperm(len(targets), generator=generator)[:n]
    ours, exact = [], []

    frozen = Frozen()  # the first pass records the norm scales and attention inputs, later ones replay them

    def target_value(plan, target):
        with torch.no_grad(), linearised(lm.model, transcoders, plan, frozen=frozen) as leaves:
            logits = lm.model(input_ids=ids[None]).logits[0, -1].float()
            if target >= graph.logit_index(0):
                token = graph.logit_tokens[target - graph.logit_index(0)]
                return float(logits[token] - logits.mean())
            layer, pos, feature = (int(v) for v in graph.features[target])
            return float(leaves.mlp_inputs[layer][0, pos].float() @ transcoders[layer].W_enc[:, feature].float())

    for pick in picks.tolist():
        target, source = int(targets[pick]), int(sources[pick])
        layer, pos, feature = (int(v) for v in graph.features[source])
        full = {k: (p, f, v.clone(), e) for k, (p, f, v, e) in read.plan.items()}
        removed = {k: (p, f, v.clone(), e) for k, (p, f, v, e) in read.plan.items()}
        positions, features, values, _ = removed[layer]
        at = int(((positions == pos) & (features == feature)).nonzero()[0])
        values[0, at] = 0.0
        # the error leaf stays as it is, so removing the feature removes exactly its own write
        exact.append(target_value(full, target) - target_value(removed, target))
        ours.append(float(graph.adjacency[target, source]))
    return ours, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transcoders", help="a transcoder-set folder, or 'default' (the cached set); "
                                              "none: a small set is trained here")
    parser.add_argument("--train-tokens", type=int, default=100_000)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--edges", type=int, default=40)
    args = parse_args(parser, {"train_tokens": 2000, "eval_tokens": 256, "budget": 8, "edges": 4})

    import numpy as np
    import torch
    from scipy.stats import pearsonr

    from saescope import load_model
    from saescope.circuits.attribution_graph import attribute_graph
    from saescope.circuits.graph_export import neuronpedia_json
    from saescope.circuits.graph_prune import graph_scores, prune
    from saescope.sae.transcoder_eval import evaluate_transcoders
    from saescope.sae.transcoder_training import TranscoderConfig, train_transcoders
    from saescope.sae.transcoders import load_set

    torch.set_num_threads(threads())
    lm = load_model(dtype="float32")
    tail = machine(lm.dtype)
    train_min = 0.0
    if args.transcoders is None:
        folder = Path(tempfile.mkdtemp(prefix="bench-graphs-")) / "transcoders"
        started = time.perf_counter()
        train_transcoders(TranscoderConfig(features=1152, k=16, tokens=args.train_tokens), folder, lm=lm, progress=False)
        train_min = (time.perf_counter() - started) / 60
    else:
        folder = args.transcoders
    transcoders = load_set(folder, lm.name)
    train_min = train_min or transcoders.record.get("train_seconds", 0.0) / 60  # a given set: its own record
    result = evaluate_transcoders(lm, transcoders, tokens=args.eval_tokens, progress=False)
    tokens = transcoders.record.get("trained_tokens", 0)
    print(f"transcoders layers={len(transcoders.layers)} features={transcoders[0].d_sae} trained_tokens={tokens} "
          f"mlp_fvu_median={result.mlp_fvu_median:.4f} replaced_ce_increase={result.replaced_ce_increase:.4f} "
          f"train_min={train_min:.1f} {tail}", flush=True)

    graph = attribute_graph(lm, transcoders, "The nurse said that", progress=False)
    replacement, completeness = graph_scores(graph)
    edges = int((graph.adjacency != 0).sum())
    print(f"graph_attribute prompt_tokens={graph.n_pos} nodes={graph.adjacency.shape[0]} edges={edges} "
          f"seconds={graph.info['seconds']:.1f} replacement={replacement:.3f} completeness={completeness:.3f} {tail}",
          flush=True)
    started = time.perf_counter()
    ours, exact = exact_edges(lm, transcoders, graph, args.edges)
    exact_s = time.perf_counter() - started
    r = pearsonr(ours, exact).statistic if len(ours) > 2 and np.std(exact) > 0 else float("nan")
    worst = max(abs(a - b) for a, b in zip(ours, exact))
    print(f"graph_vs_exact edges={len(ours)} edge_pearson={r:.6f} max_abs_diff={worst:.2e} "
          f"ours_s={graph.info['seconds']:.1f} exact_s={exact_s:.1f} circuit_tracer=not_runnable {tail}", flush=True)

    long = attribute_graph(lm, transcoders, LONG, max_feature_nodes=args.budget, progress=False)
    pruned = prune(long)
    exported = neuronpedia_json(long, pruned, "long", "bench", 0.8)
    megabytes = len(json.dumps(exported)) / 1e6
    print(f"graph_json_mb tokens={long.n_pos} budget={args.budget} active_features={long.info['active_features']} "
          f"seconds={long.info['seconds']:.1f} nodes={len(exported['nodes'])} links={len(exported['links'])} "
          f"mb={megabytes:.3f} {tail}", flush=True)


if __name__ == "__main__":
    main()
