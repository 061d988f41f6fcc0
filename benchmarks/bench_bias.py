"""Gender bias: how fast ``bias eval`` is, and (``--full``) the Pareto front of bias reduction against CE increase.

By default (``--speed``, ~3 min on 2 cores): ``bias eval`` of the plain model and a steering vector on
the full benchmark data, once with the plain model's scores measured (cold cache) and once with them
from the cache, as ``debias`` and repeated ``bias eval --intervention`` runs use it. Prints
``bias_eval_speed seconds=<s> cached_base=<no|yes> dtype=<name> cpu=<capability>`` for both.

``--full [METHODS...]`` (long): for every method, the candidates are built exactly as
``saescope debias --features auto`` builds them
(features and the steer coefficient chosen on training prompts only) and then *every* candidate is
evaluated on the evaluation benchmarks, reusing the plain model's scores. Prints one line per
candidate, ``bias_candidate method=<m> candidate=<label> dev_reduction=<x> abs_r=<r> wino1=<p> wino2=<p>
ce_increase=<x> sva_drop=<x> definitional_ratio=<x> pareto=<0|1>``, then
``bias_eval seconds=<s>`` (full evaluation, with and without an intervention) and
``bias_best method=<m> candidate=<label> dev_reduction=<x> ce_increase=<x>``.
Writes ``benchmarks/results/bias_pareto.csv``.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from saescope.bias.debias.plan import plan_debias
from saescope.bias.debias.registry import method_names
from saescope.bias.evaluation import evaluate
from saescope.model.loading import load_model
from saescope.sae.formats import load_sae
from saescope.steering import VectorSteering

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads


def pareto(frame: pd.DataFrame) -> pd.Series:
    """True for candidates no other candidate beats on both bias reduction and CE increase."""
    gain, cost = frame.mean_abs_dev_reduction, frame.ce_loss_increase
    flags = []
    for g, c in zip(gain, cost):
        flags.append(not ((gain >= g) & (cost <= c) & ((gain > g) | (cost < c))).any())
    return pd.Series(flags, index=frame.index)


def speed(dtype: str, smoke: bool = False) -> None:
    """Cold (plain model scored) and warm (plain model's scores cached) ``bias eval`` of a vector."""
    lm = load_model(dtype=dtype)
    data = smoke_data() if smoke else None
    steer = VectorSteering("blocks.12.hook_resid_post", torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0)),
                           2.0)
    home = os.environ.get("SAESCOPE_HOME")
    os.environ["SAESCOPE_HOME"] = tempfile.mkdtemp(prefix="bench_bias_")  # an empty cache
    try:
        for cached in ("no", "yes"):
            start = time.perf_counter()
            result = evaluate(lm, steer, data=data, ce_tokens=128 if smoke else 8_192)
            seconds = time.perf_counter() - start
            assert (result.cached_base and cached == "yes") or (not result.cached_base and cached == "no")
            print(f"bias_eval_speed seconds={seconds:.1f} cached_base={cached} {machine(lm.dtype)}", flush=True)
    finally:
        if home is None:
            os.environ.pop("SAESCOPE_HOME")
        else:
            os.environ["SAESCOPE_HOME"] = home


def smoke_data():
    """A few items of every benchmark (``--smoke``)."""
    from saescope.bias.data import BiasData

    d = BiasData.load()
    return BiasData(d.occupations[:4], d.winobias[:2] + d.winobias[-2:], d.crows[:2], d.agreement[:4],
                    d.definitional[:4], d.templates[:1])


def full(methods: list[str], dtype: str) -> None:
    lm, sae = load_model(dtype=dtype), load_sae("default")
    start = time.perf_counter()
    first = None
    rows = []
    for method in methods:
        plan = plan_debias(lm, sae, method)
        for candidate in plan.candidates.itertuples():
            intervention = plan.by_label[candidate.candidate]
            began = time.perf_counter()
            result = evaluate(lm, intervention, base=None if first is None else first.base)
            if first is None:
                first, full_seconds = result, time.perf_counter() - began
            c = result.changes
            rows.append({"method": method, "candidate": candidate.candidate, "chosen_by_selection": candidate.chosen,
                         **c, "kl_div": result.kl_div, "crows": next(iter(result.intervened.crows.preference.values()))})
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
                  flush=True)
    frame = pd.DataFrame(rows)
    frame["pareto"] = pareto(frame)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    frame.to_csv(out / "bias_pareto.csv", index=False)
    for row in frame.itertuples():
        print(f"bias_candidate method={row.method} candidate={row.candidate.replace(' ', '_')} "
              f"dev_reduction={row.mean_abs_dev_reduction:.3f} "
              f"abs_r={row.abs_pearson_r:.3f} wino1={row.winobias_type1:.3f} wino2={row.winobias_type2:.3f} "
              f"ce_increase={row.ce_loss_increase:.4f} sva_drop={row.agreement_drop:.4f} "
              f"definitional_ratio={row.definitional_ratio:.3f} pareto={int(row.pareto)} {machine(lm.dtype)}")
    print(f"bias_eval seconds={full_seconds:.0f} {machine(lm.dtype)}")
    admissible = frame[(frame.ce_loss_increase <= 0.02) & (frame.definitional_ratio >= 0.95) & (frame.agreement_drop <= 0.01)]
    best = (admissible if len(admissible) else frame).sort_values("mean_abs_dev_reduction").iloc[-1]
    print(f"bias_best method={best.method} candidate={best.candidate.replace(' ', '_')} "
          f"dev_reduction={best.mean_abs_dev_reduction:.3f} "
          f"ce_increase={best.ce_loss_increase:.4f} total_seconds={time.perf_counter() - start:.0f} {machine(lm.dtype)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true", help="the default: bias eval wall time, cold and cached")
    parser.add_argument("--full", nargs="*", choices=method_names(), help="the Pareto study over these methods (all if none)")
    parser.add_argument("--dtype", default="auto")
    args = parse_args(parser, {})
    torch.set_num_threads(threads())
    if args.full is not None:
        full(args.full or [m for m in method_names() if m != "auto"], args.dtype)
    else:
        speed(args.dtype, args.smoke)


if __name__ == "__main__":
    main()
