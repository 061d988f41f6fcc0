"""``saescope bias gender-vector`` (also ``saescope edit gender-vector``, its earlier name)."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.bias.gender_vector.config import GenderVectorConfig
from saescope.cli.common import (
    DEVICE_OPTION,
    MEASURE_DTYPE_OPTION,
    MODEL_OPTION,
    check_folder,
    config_options,
    console,
    print_json,
)


@config_options(GenderVectorConfig)
def gender_vector(
    out: Path = typer.Option(..., help="Output folder (report.html, summary.json, directions.csv, ...)."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    config: GenderVectorConfig = None,
) -> None:
    """The gender vector in ROME's edit deltas: flip names, classify the deltas, build one vector, flip
    held-out names with it and compare it with the CAA and SAE gender directions. Re-running on the same
    folder resumes the discovery edits.

    Example: saescope bias gender-vector --out gender-vector --names 100
    """
    from saescope.bias.gender_vector.study import run_gender_vector_study
    from saescope.model.loading import load_model

    check_folder(out)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    summary = run_gender_vector_study(lm, out, config, progress=not json_out)
    if json_out:
        print_json(summary)
        return
    for key in ("layer", "discovery", "heldout", "classifier_acc", "flip_f2m", "flip_m2f", "noop_same_gender",
                "others_unchanged", "ce_increase"):
        console.print(f"{key:>18}: {summary[key]}")
    console.print(f"wrote {out / 'report.html'}")
