"""Transcoders and attribution graphs on the embedded model.

1. ``transcoders``: the set given by ``--transcoders`` (or one trained here on ``--train-tokens`` tokens,
   every layer, 1,152 features, k = 16), evaluated on ``--eval-tokens`` held-out tokens: the median
   MLP-output FVU over layers, and the CE increase with every MLP replaced.
2. ``graph_attribute``: the graph of "The nurse said that" (every active feature's row) with its size, time
   and circuit-tracer's replacement and completeness scores.
3. ``graph_vs_exact``: 40 random edges of that graph against an exact per-edge computation: the target
   recomputed by forward passes in the frozen replacement model (norm scales and attention inputs replayed
   from the prompt, ``replacement.Frozen``) with and without the source; Pearson r and the largest
   difference.
   ``graph_vs_circuit_tracer``: the same token ids (circuit-tracer's BOS first) and the same transcoder set
   through circuit-tracer 0.5's own ``attribute`` (its nnsight backend, ``benchmarks/circuit_tracer_graph.py``
   run by ``--circuit-tracer-python``, default ``.venv-circuit-tracer/bin/python`` from
   ``make circuit-tracer-venv``): edge Pearson r over the nodes both graphs hold, and each side's seconds
   for ``attribute`` alone (model loading excluded), one after the other on the same threads, and each
   side's replacement / completeness scores (ours/theirs).
   circuit-tracer sets the error nodes at position 0 to zero (its BOS convention) where saescope keeps
   the sink's MLP output whole in them, so edges out of those nodes are left out of r (counted in
   ``sink_error_edges``). saescope's pruned Neuronpedia JSON of that graph is read with circuit-tracer's own
   pydantic models first (``our_json_in_their_models=valid``; the line says ``failed`` otherwise).
4. ``graph_json_mb``: a 64-token prompt with a ``--budget`` of feature rows: seconds, and the size of the
   pruned Neuronpedia JSON.

Usage: ``python benchmarks/bench_graphs.py [--transcoders DIR] [--train-tokens 100000]
[--circuit-tracer-python PY]`` (≤ 10 min on 2
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


def versus_circuit_tracer(lm, transcoders, folder, python: str, tail: str) -> None:
    """The ``graph_vs_circuit_tracer`` line (module docstring), or why it could not run."""
    import subprocess

    import torch
    from safetensors.torch import load_file

    from saescope.circuits.attribution_graph import attribute_ids
    from saescope.circuits.graph_export import neuronpedia_json
    from saescope.circuits.graph_prune import graph_scores, prune
    from saescope.model.loading import embedded_model_path
    from saescope.sae.transcoders import set_path

    if not Path(python).exists():
        print(f"graph_vs_circuit_tracer skipped=no_circuit_tracer_venv hint=make_circuit-tracer-venv {tail}", flush=True)
        return
    ids = torch.tensor([lm.tokenizer.bos_token_id, *lm.encode("The nurse said that")])
    out = Path(tempfile.mkdtemp(prefix="bench-ct-")) / "graph.safetensors"
    ours = attribute_ids(lm.model, transcoders, ids, progress=False)
    ours.token_strings = [lm.tokenizer.decode([t]) for t in ours.tokens]
    ours.logit_strings = [lm.tokenizer.decode([t]) for t in ours.logit_tokens]
    exported = out.with_name("graph-neuronpedia.json")
    exported.write_text(json.dumps(neuronpedia_json(ours, prune(ours), "nurse", "bench", 0.8)))
    done = subprocess.run([python, str(Path(__file__).with_name("circuit_tracer_graph.py")), "--model",
                           embedded_model_path(), "--transcoders", str(set_path(folder, lm.name)), "--tokens",
                           ",".join(map(str, ids.tolist())), "--out", str(out), "--validate", str(exported)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"graph_vs_circuit_tracer failed={last.split(':')[0].replace(' ', '_')} {tail}", flush=True)
        print(done.stderr[-2000:], file=sys.stderr)
        return
    theirs = load_file(str(out))
    r, shared, sink_edges = compare_graphs(ours, theirs)
    replacement, completeness = graph_scores(ours)
    print(f"graph_vs_circuit_tracer prompt_tokens={len(ids)} edge_pearson={r:.6f} shared_features={shared} "
          f"replacement={replacement:.3f}/{float(theirs['scores'][0]):.3f} "
          f"completeness={completeness:.3f}/{float(theirs['scores'][1]):.3f} "
          f"ours_features={ours.n_features} theirs_features={len(theirs['active_features'])} "
          f"sink_error_edges={sink_edges} our_json_in_their_models=valid ours_s={ours.info['seconds']:.1f} "
          f"theirs_s={float(theirs['seconds']):.1f} "
          f"{tail}", flush=True)


def compare_graphs(ours, theirs: dict) -> tuple[float, int, int]:
    """Edge Pearson r over the nodes both graphs hold (features matched by (layer, position, id), logits by
    token), without the edges out of position-0 error nodes; the shared features; the edges left out."""
    import torch

    mine = {tuple(f.tolist()): i for i, f in enumerate(ours.features)}
    other = {tuple(f.tolist()): i for i, f in enumerate(theirs["active_features"])}
    shared = sorted(set(mine) & set(other))
    n_mine, n_other, n_pos = ours.n_features, len(other), ours.n_pos
    middle = ours.n_layers * n_pos + n_pos  # error and token nodes, the same order in both
    logits_mine = {t: i for i, t in enumerate(ours.logit_tokens)}
    logits_other = {int(t): i for i, t in enumerate(theirs["logit_tokens"])}
    tokens = [t for t in logits_mine if t in logits_other]
    first_mine, first_other = n_mine + middle, n_other + middle
    rows_mine = torch.tensor([mine[f] for f in shared] + list(range(n_mine, first_mine))
                             + [first_mine + logits_mine[t] for t in tokens])
    rows_other = torch.tensor([other[f] for f in shared] + list(range(n_other, first_other))
                              + [first_other + logits_other[t] for t in tokens])
    a, b = ours.adjacency[rows_mine][:, rows_mine], theirs["adjacency"][rows_other][:, rows_other]
    sink = torch.zeros(a.shape[1], dtype=torch.bool)
    sink[[len(shared) + layer * n_pos for layer in range(ours.n_layers)]] = True
    edges = (a != 0) | (b != 0)
    x, y = a[edges & ~sink].double(), b[edges & ~sink].double()
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1]), len(shared), int((edges & sink).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transcoders", help="a transcoder-set folder, or 'default' (the cached set); "
                                              "none: a small set is trained here")
    parser.add_argument("--train-tokens", type=int, default=100_000)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--edges", type=int, default=40)
    parser.add_argument("--circuit-tracer-python", default=str(Path(__file__).resolve().parents[1]
                                                               / ".venv-circuit-tracer" / "bin" / "python"))
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
          f"ours_s={graph.info['seconds']:.1f} exact_s={exact_s:.1f} {tail}", flush=True)
    versus_circuit_tracer(lm, transcoders, folder, args.circuit_tracer_python, tail)

    long = attribute_graph(lm, transcoders, LONG, max_feature_nodes=args.budget, progress=False)
    pruned = prune(long)
    exported = neuronpedia_json(long, pruned, "long", "bench", 0.8)
    megabytes = len(json.dumps(exported)) / 1e6
    print(f"graph_json_mb tokens={long.n_pos} budget={args.budget} active_features={long.info['active_features']} "
          f"seconds={long.info['seconds']:.1f} nodes={len(exported['nodes'])} links={len(exported['links'])} "
          f"mb={megabytes:.3f} {tail}", flush=True)


if __name__ == "__main__":
    main()
