"""``saescope shift run``: SHIFT on the offline biography set, with its baselines."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.bias.shift_config import ShiftConfig
from saescope.cli.common import MEASURE_DTYPE_HELP, config_options, console, print_json

shift_app = typer.Typer(no_args_is_help=True, help="SHIFT: remove a probe's reliance on gender features.")


@shift_app.command("run")
@config_options(ShiftConfig, exclude=("features",))
def run(
    out: Path = typer.Option(..., help="Output folder (shift.json, intervention.json)."),
    features: str = typer.Option(None, help="Features to ablate instead of the automatic choice: LAYER:ID,LAYER:ID."),
    saes: str = typer.Option("default", help="'default' (the shipped suite) or a suite folder."),
    model: str = typer.Option(None),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto", help=MEASURE_DTYPE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: ShiftConfig = None,
) -> None:
    """Train a profession probe on confounded biographies, ablate its gender features, retrain, compare.

    Example: saescope shift run --out shift
    """
    from dataclasses import asdict, replace

    from saescope.bias.shift import GROUPS
    from saescope.bias.shift_run import run_shift
    from saescope.model.loading import load_model
    from saescope.sae.suite import load_suite
    from saescope.steering.features import feature_ablation
    from saescope.storage import write_json

    if out.exists() and not out.is_dir():
        from saescope.errors import SaescopeError

        raise SaescopeError(f"{out} is a file: --out must name a folder")
    if features:
        config = replace(config, features=[f.strip() for f in features.split(",") if f.strip()])
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

    Example: saescope shift replica --out rep1 && saescope shift run --train rep1/train.jsonl
    --oracle-train rep1/oracle_train.jsonl --test rep1/test.jsonl --out rep1/shift
    """
    from saescope.bias.shift_data import write_replica

    for path in write_replica(out, seed, flip, overwrite):
        console.print(f"wrote {path}")
