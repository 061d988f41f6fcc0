"""Sparse feature circuits on subject-verb agreement, over the shipped SAE suite (8 layers).

1. ``circuit_ig_vs_patching``: for ``--examples`` held-out pairs, the top 100 nodes (per position) by
   |IG effect| are patched exactly, one at a time; Pearson r of IG (and attribution patching) with the
   exact effects, averaged over the examples.
2. ``circuit_faithfulness``: a circuit found (IG, 10 steps, ``aggregation sum``) on 100
   ``sva_simple_train`` pairs, evaluated with mean ablation on ``sva_simple_test`` at ≤ 200 nodes
   (its 200 largest nodes), beside the component-level (residual-dimension) circuit of the same size.
3. ``circuit_speed``: the wall time of that ``find_circuit`` (nodes and edges; ``ours_s``) and of its
   node attribution alone (``nodes_only_s``) against a per-node exact-patching loop over the same nodes
   and pairs (one forward of all the pairs per node; ``exact_loop_s``).

4. ``shift`` (with ``--shift``, ≈ 8 min more): ``saescope shift run``'s defaults on the shipped suite; gender and
   profession accuracy after SHIFT, the oracle's profession accuracy and random ablation's gender accuracy.

Usage: ``python benchmarks/bench_circuits.py [--pairs 100] [--examples 4] [--shift]`` (≈ 5 min on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from saescope.circuits.ablation import faithfulness_curve
from saescope.circuits.config import CircuitConfig
from saescope.circuits.data import read_pairs
from saescope.circuits.dictionaries import load_dictionaries
from saescope.circuits.find import find_circuit, pair_batches
from saescope.circuits.patching import check_against_patching, exact_effects
from saescope.model.loading import load_model

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100, help="discovery pairs")
    parser.add_argument("--examples", type=int, default=4, help="held-out pairs for the patching check")
    parser.add_argument("--nodes", type=int, default=200, help="circuit size for the faithfulness line")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--shift", action="store_true", help="also the SHIFT line (about 8 minutes more)")
    parser.add_argument("--test-pairs", type=int, default=None, help="held-out pairs of the faithfulness line (all)")
    parser.add_argument("--steps", type=int, default=10, help="integrated-gradient steps")
    parser.add_argument("--top", type=int, default=100, help="nodes patched exactly in the IG check")
    args = parse_args(parser, {"pairs": 16, "examples": 1, "nodes": 16, "test_pairs": 8, "steps": 2, "top": 4})
    lm = load_model(dtype=args.dtype)
    tag = machine(lm.dtype)
    saes = load_dictionaries("default", lm)
    test = read_pairs("sva_simple_test")
    top = args.top

    rs, atp_rs = [], []
    for i in range(args.examples):
        batches, _ = pair_batches(lm, [test[i * 7]], 1)
        check = check_against_patching(lm, saes, batches[0], top=top, steps=args.steps)
        rs.append(check.pearson["ig"])
        atp_rs.append(check.pearson["atp"])
    print(f"circuit_ig_vs_patching nodes={top} pearson={statistics.mean(rs):.3f} min={min(rs):.3f} "
          f"atp_pearson={statistics.mean(atp_rs):.3f} examples={args.examples} {tag}", flush=True)

    train = read_pairs("sva_simple_train", limit=args.pairs)
    config = CircuitConfig(method="ig", steps=args.steps, node_threshold=0.01, edge_threshold=0.01, aggregation="sum",
                           max_nodes=args.nodes)
    started = time.perf_counter()
    circuit = find_circuit(lm, saes, train, config, data="sva_simple_train", limit=args.pairs, progress=False)
    ours = time.perf_counter() - started
    test = test[:args.test_pairs] if args.test_pairs else test
    points, _ = faithfulness_curve(lm, saes, circuit, test, top_ns=[args.nodes])
    basis = load_dictionaries("default", lm, components=True)
    components = find_circuit(lm, basis, train, CircuitConfig(**{**config.__dict__, "node_threshold": 0.0}),
                              progress=False, with_edges=False)
    component_points, _ = faithfulness_curve(lm, basis, components, test, top_ns=[points[0].nodes])
    print(f"circuit_faithfulness data=sva_simple_test nodes={points[0].nodes} faithfulness={points[0].faithfulness:.3f} "
          f"completeness={points[0].completeness:.3f} component_faithfulness={component_points[0].faithfulness:.3f} "
          f"edges={len(circuit.edges)} {tag}", flush=True)

    started = time.perf_counter()
    find_circuit(lm, saes, train, config, progress=False, with_edges=False)
    nodes_only = time.perf_counter() - started
    batches, _ = pair_batches(lm, train, args.pairs)
    n_pairs = sum(len(b) for b in batches)
    started = time.perf_counter()
    for batch in batches:
        exact_effects(lm, saes, batch, circuit.nodes, nodes_per_pass=1)
    loop = time.perf_counter() - started
    report_speed(n_pairs, circuit, ours, loop, nodes_only, tag)
    if args.shift:
        shift_line(lm, tag)


def report_speed(n_pairs: int, circuit, ours: float, loop: float, nodes_only: float, tag: str) -> None:
    print(f"circuit_speed pairs={n_pairs} nodes={len(circuit.nodes)} ours_s={ours:.1f} exact_loop_s={loop:.1f} "
          f"ratio={loop / ours:.2f} nodes_only_s={nodes_only:.1f} nodes_only_ratio={loop / nodes_only:.2f} {tag}",
          flush=True)


def shift_line(lm, tag: str) -> None:
    from saescope.bias.shift.core import ShiftConfig
    from saescope.bias.shift.run import run_shift
    from saescope.sae.suite import load_suite

    summary = run_shift(lm, load_suite("default"), ShiftConfig(), progress=False).summary
    print(f"shift gender_acc={summary['shift']['gender_acc']:.3f} profession_acc={summary['shift']['profession_acc']:.3f} "
          f"oracle_profession_acc={summary['oracle']['profession_acc']:.3f} "
          f"random_gender_acc={summary['random']['gender_acc']:.3f} worst_group={summary['shift']['worst_group_acc']:.3f} "
          f"{tag}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    main()
