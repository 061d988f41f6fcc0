"""Every debias candidate's training-twin preferences, not only the Pareto front's (docs/results/figures.md,
"Training twins"). Training data only: the selection prompts and the twins built from them.

    python benchmarks/results/debias_training_twins.py --method auto      # about 12 min on 2 cores

Prints one line per candidate: ``twins candidate=<label> dev_reduction=<x> coref=<p> pairs=<p> dtype=<d> cpu=<c>``,
the plain model's first (the Pareto front's twins are the plan's own, the others are scored here).
"""

from __future__ import annotations

import argparse

import torch

import saescope
from saescope.bias.data import SelectionPrompts
from saescope.bias.debias.plan import plan_debias
from saescope.bias.debias.selection import SelectionScorer
from saescope.precision import cpu_capability, dtype_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="auto")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm, sae = saescope.load_model(dtype=args.dtype), saescope.load_sae("default")
    selection = SelectionPrompts.load()
    plan = plan_debias(lm, sae, args.method, selection=selection)  # scores the plain model and the Pareto front
    scorer = SelectionScorer(lm, selection)
    tail = f"dtype={dtype_name(lm.dtype)} cpu={cpu_capability()}"

    def line(label: str, cut: float, twins: dict[str, float]) -> None:
        print(f"twins candidate={label.replace(' ', '_')} dev_reduction={cut:.3f} coref={twins['coref_preference']:.3f} "
              f"pairs={twins['pair_preference']:.3f} {tail}", flush=True)

    line("plain", 0.0, plan.twins["plain"])
    for row in plan.candidates.itertuples():
        scored = row.pareto and "coref_preference" in plan.candidates
        line(row.candidate, row.dev_reduction,
             {"coref_preference": row.coref_preference, "pair_preference": row.pair_preference} if scored
             else scorer.twin_scores(plan.by_label[row.candidate]))


if __name__ == "__main__":
    main()
