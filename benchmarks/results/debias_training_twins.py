"""Every debias candidate's training-twin preferences, not only the Pareto front's (docs/results/figures.md,
"Training twins"). Training data only: the selection prompts and the twins built from them.

    python benchmarks/results/debias_training_twins.py --method auto      # about 13 min on 2 cores

Prints one line per candidate: ``twins candidate=<label> dev_reduction=<x> coref=<p> pairs=<p>``, the plain
model's first.
"""

from __future__ import annotations

import argparse

import torch

import saescope
from saescope.bias.data import SelectionPrompts
from saescope.bias.debias.plan import plan_debias
from saescope.bias.debias.selection import SelectionScorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="auto")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm, sae = saescope.load_model(dtype=args.dtype), saescope.load_sae("default")
    selection = SelectionPrompts.load()
    plan = plan_debias(lm, sae, args.method, selection=selection)
    scorer = SelectionScorer(lm, selection)
    plain = scorer.twin_scores(None)
    print(f"twins candidate=plain dev_reduction=0 coref={plain['coref_preference']:.3f} pairs={plain['pair_preference']:.3f}")
    for row in plan.candidates.itertuples():
        twins = scorer.twin_scores(plan.by_label[row.candidate])
        print(f"twins candidate={row.candidate.replace(' ', '_')} dev_reduction={row.dev_reduction:.3f} "
              f"coref={twins['coref_preference']:.3f} pairs={twins['pair_preference']:.3f}", flush=True)


if __name__ == "__main__":
    main()
