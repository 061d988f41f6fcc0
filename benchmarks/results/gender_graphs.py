"""The worked example of docs/guides/attribution_graphs.md: the attribution graphs of a stereotyped prompt
("The nurse said that") and a definitional one ("The king said that"), and where the pronoun's influence
enters: per position, per layer band, and through features against error nodes.

Usage: python benchmarks/results/gender_graphs.py TRANSCODERS OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from saescope import load_model
from saescope.circuits.attribution_graph import attribute_graph
from saescope.circuits.graph_prune import graph_scores, influence, normalised
from saescope.sae.transcoders import load_transcoders

PROMPTS = {"nurse": "The nurse said that", "king": "The king said that"}


def pronoun_influence(graph, token: str) -> torch.Tensor:
    """Every node's influence on one pronoun's logit node (weight 1 on it)."""
    weights = torch.zeros(graph.adjacency.shape[0])
    weights[graph.logit_index(graph.logit_strings.index(token))] = 1.0
    return influence(normalised(graph.adjacency), weights)


def main() -> None:
    transcoders, out = load_transcoders(sys.argv[1]), Path(sys.argv[2])
    lm = load_model(dtype="float32")
    for name, prompt in PROMPTS.items():
        graph = attribute_graph(lm, transcoders, prompt, progress=False)
        graph.save(out / name)
        replacement, completeness = graph_scores(graph)
        probs = dict(zip(graph.logit_strings, graph.logit_probabilities.tolist()))
        print(f"## {prompt!r}: p(she)={probs.get(' she', 0):.3f} p(he)={probs.get(' he', 0):.3f} "
              f"replacement={replacement:.3f} completeness={completeness:.3f} features={graph.n_features} "
              f"seconds={graph.info['seconds']}")
        parts = direct_difference(graph)
        print("direct effect on logit(she) - logit(he): total " + f"{sum(parts.values()):+.2f}; " + "; ".join(
            f"{k} {v:+.2f}" for k, v in sorted(parts.items(), key=lambda kv: -abs(kv[1]))[:8]))
        for pronoun in (" she", " he"):
            if pronoun not in graph.logit_strings:
                continue
            inf = pronoun_influence(graph, pronoun)
            feats = inf[:graph.n_features]
            errors = inf[graph.error_index(0, 0):graph.token_index(0)].view(graph.n_layers, graph.n_pos)
            tokens = inf[graph.token_index(0):graph.logit_index(0)]
            by_pos = [float(feats[graph.features[:, 1] == p].sum()) for p in range(graph.n_pos)]
            bands = [(0, 10), (10, 20), (20, 30)]
            by_band = [float(feats[(graph.features[:, 0] >= a) & (graph.features[:, 0] < b)].sum()) for a, b in bands]
            total = float(feats.sum() + errors.sum() + tokens.sum())
            print(f"{pronoun!r}: features {float(feats.sum()) / total:.2f} errors {float(errors.sum()) / total:.2f} "
                  f"tokens {float(tokens.sum()) / total:.2f} of the influence | features by position "
                  + ", ".join(f"{graph.token_strings[p]!r} {v / total:.2f}" for p, v in enumerate(by_pos))
                  + " | by layers " + ", ".join(f"{a}-{b - 1}: {v / total:.2f}" for (a, b), v in zip(bands, by_band)))
            top = feats.topk(5)
            print("   top features (layer, position, id: share): " + "; ".join(
                f"L{int(graph.features[i, 0])} {graph.token_strings[int(graph.features[i, 1])]!r} "
                f"#{int(graph.features[i, 2])}: {float(v) / total:.3f}" for v, i in zip(top.values, top.indices)))




def direct_difference(graph) -> dict[str, float]:
    """The direct (one-edge) effect of each group of nodes on logit(she) − logit(he): features by position
    and layer band, error nodes by position, token embeddings by position."""
    row = graph.adjacency[graph.logit_index(graph.logit_strings.index(" she"))] - \
        graph.adjacency[graph.logit_index(graph.logit_strings.index(" he"))]
    out = {}
    for p, text in enumerate(graph.token_strings):
        at = graph.features[:, 1] == p
        for a, b in ((0, 10), (10, 20), (20, 30)):
            band = at & (graph.features[:, 0] >= a) & (graph.features[:, 0] < b)
            out[f"features {text!r} L{a}-{b - 1}"] = float(row[:graph.n_features][band].sum())
        out[f"errors {text!r}"] = float(sum(row[graph.error_index(layer, p)] for layer in range(graph.n_layers)))
        out[f"embedding {text!r}"] = float(row[graph.token_index(p)])
    return out


if __name__ == "__main__":
    main()
