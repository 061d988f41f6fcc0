"""``saescope bias shift run``: SHIFT on the offline biography set, with its baselines."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.bias.shift.config import ShiftConfig
from saescope.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    MEASURE_DTYPE_OPTION,
    MODEL_OPTION,
    check_folder,
    config_options,
    console,
    print_json,
)

shift_app = typer.Typer(no_args_is_help=True, help="SHIFT: remove a probe's reliance on gender features.")


@shift_app.command("run")
@config_options(ShiftConfig)
def run(
    out: Path = typer.Option(..., help="Output folder (shift.json, intervention.json)."),
    saes: str = typer.Option("default", help="'default' (the shipped suite) or a suite folder."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
    config: ShiftConfig = None,
) -> None:
    """Train a profession probe on confounded biographies, ablate its gender features, retrain, compare.

    Example: saescope bias shift run --out shift
    """
    from dataclasses import asdict

    from saescope.bias.shift.core import GROUPS
    from saescope.bias.shift.run import run_shift
    from saescope.model.loading import load_model
    from saescope.sae.suite import load_suite
    from saescope.steering.features import feature_ablation
    from saescope.storage import write_json

    check_folder(out)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    suite = load_suite(saes, device=device)
    result = run_shift(lm, suite, config)
    report = {"summary": result.summary, "runs": result.runs, "ablated": result.ablated,
              "candidates": result.candidates, "settings": result.settings, "config": asdict(config)}
    write_json(out / "shift.json", report)
    intervention = feature_ablation(suite, result.ablated)
    if intervention is not None:
        intervention.save(out / "intervention.json")
    if json_out:
        print_json(report)
        return
    console.print(f"ablated {result.settings['n_ablated']} features ({result.settings['selection']}) of "
                  f"{', '.join(result.settings['hooks'])}; probe at {result.settings['readout']}")
    short = {f"{name}_acc": name.replace("professor", "prof").replace("_female", "-f").replace("_male", "-m")
             for name in GROUPS.values()}
    console.print(f"{'condition':>20} {'profession':>11} {'gender':>8} {'worst group':>12}"
                  + "".join(f" {label:>8}" for label in short.values()), soft_wrap=True)
    for name, row in result.summary.items():
        console.print(f"{name:>20} {row['profession_acc']:>11.3f} {row['gender_acc']:>8.3f} {row['worst_group_acc']:>12.3f}"
                      + "".join(f" {row[key]:>8.3f}" for key in short), soft_wrap=True)
    console.print(f"wrote {out / 'shift.json'}")


@shift_app.command("replica")
def replica(
    out: Path = typer.Option(..., help="Output folder (train.jsonl, oracle_train.jsonl, test.jsonl)."),
    seed: int = typer.Option(1, help="Generator seed (the shipped splits are seed 0 of the full vocabularies)."),
    flip: bool = typer.Option(False, help="Train on the second half of the training vocabulary, test on the first."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the split files already in OUT."),
) -> None:
    """Write a replica of the SHIFT data from the training vocabulary alone, to choose settings without the test split.

    Example: saescope bias shift replica --out rep1 && saescope bias shift run --train rep1/train.jsonl
    --oracle-train rep1/oracle_train.jsonl --test rep1/test.jsonl --out rep1/shift
    """
    from saescope.bias.shift.data import write_replica

    for path in write_replica(out, seed, flip, overwrite):
        console.print(f"wrote {path}")
