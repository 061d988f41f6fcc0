"""``saescope bias eval|features|debias`` (``debias`` is also a top-level command, its earlier place)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from saescope.bias.config import BiasDataFiles
from saescope.bias.debias.config import DebiasConfig
from saescope.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    MEASURE_DTYPE_OPTION,
    MODEL_OPTION,
    SAE_HELP,
    config_options,
    console,
    load_model_and_sae,
    print_json,
)
from saescope.errors import SaescopeError

GENERATE_OPTION = typer.Option(0, help="Also sample this many continuations per prompt and occupation at "
                               "temperature 1 (fixed seeds) and correlate their pronouns with BLS; 0: off.")

bias_app = typer.Typer(no_args_is_help=True, help="Measure gender bias and find the SAE features behind it.")


def _print_evaluation(result, json_out: bool) -> None:
    if json_out:
        print_json(result.to_dict())
        return
    table = Table(title=f"gender bias of {result.model} ({result.seconds:.0f} s)")
    for column in ("metric", "before", "after"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, before, after in result.summary_rows():
        table.add_row(name, f"{before:.4f}", "" if after is None else f"{after:.4f}")
    console.print(table)
    intervals = result.intervals
    for name, ok in result.targets_met.items():
        ci = f" (95 % interval {intervals[name][0]:.3f}-{intervals[name][1]:.3f})" if name in intervals else ""
        console.print(f"{name}: {result.changes[name]:.4f} {'[green]met[/green]' if ok else '[red]not met[/red]'}{ci}")


@bias_app.command("eval")
@config_options(BiasDataFiles, param="files")
def bias_eval(
    intervention: Path = typer.Option(None, help="A saved intervention (JSON) or edit folder to compare against "
                                      "the plain model."),
    ce_tokens: int = typer.Option(8192, help="Held-out tokens for CE loss and KL."),
    generate: int = GENERATE_OPTION,
    model: str = MODEL_OPTION,
    out: Path = typer.Option(None, help="Write metrics.json and report.html to this folder."),
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
    files: BiasDataFiles = None,
) -> None:
    """Every gender-bias benchmark, without and (with --intervention) with an intervention.

    Example: saescope bias eval --intervention debias/intervention.json --json
    """
    from saescope.bias.evaluation import evaluate
    from saescope.bias.outputs import write_results
    from saescope.editing.weight_edit import load_applicable
    from saescope.model.loading import load_model

    data = files.load()
    loaded = load_applicable(intervention) if intervention is not None else None
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    result = evaluate(lm, loaded, data, ce_tokens=ce_tokens, progress=not json_out, generate=generate)
    if out is not None:
        write_results(out, result, "saescope bias eval", loaded,
                      settings={"intervention": str(intervention) if intervention else "none"})
    _print_evaluation(result, json_out)


@bias_app.command("features")
def bias_features(
    run: Path = typer.Option(None, help="A features RUN of the same SAE (adds top tokens and contexts)."),
    top: int = typer.Option(30, help="How many features to show."),
    kind: str = typer.Option(None, help="Only stereotype | definitional | both."),
    sae: str = typer.Option("default", help=SAE_HELP),
    contexts: int = typer.Option(2, help="Top contexts per feature to print (needs --run)."),
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """SAE features ranked by gender association, split into stereotype and definitional gender.

    Example: saescope bias features --run runs/default --top 20
    """
    from saescope.bias.gender_features import rank_gender_features
    from saescope.bias.summary import features_summary
    from saescope.features.run import FeatureRun

    if top <= 0:
        raise SaescopeError(f"--top must be positive, got {top}")
    if kind not in (None, "stereotype", "definitional", "both"):
        raise SaescopeError(f"unknown --kind {kind!r}: use stereotype, definitional or both")
    feature_run = FeatureRun.load(run) if run is not None else None
    lm, sae_module, hook = load_model_and_sae(sae, None, None, device, dtype, purpose="measure")
    table = rank_gender_features(lm, sae_module, hook)
    table = table[table.kind != "none"] if kind is None else table[table.kind == kind]
    chosen = [int(f) for f in table.feature.head(top)]
    summary = features_summary(lm, sae_module, table, chosen, feature_run)
    if json_out:
        print_json(summary.to_dict("records"))
        return
    out = Table(title="gender features (training prompts only)")
    for column in summary.columns:
        out.add_column(str(column))
    for row in summary.itertuples(index=False):
        out.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(out)
    if feature_run is not None:
        for feature in chosen[:top]:
            for example in feature_run.examples(feature).head(contexts).itertuples():
                console.print(f"[bold]{feature}[/bold] {example.activation:.2f}: {''.join(example.context_tokens)!r}")


@bias_app.command("debias")
@config_options(DebiasConfig)
@config_options(BiasDataFiles, param="files")
def debias(
    out: Path = typer.Option(..., help="Folder for intervention.json, metrics.json, report.html."),
    run: Path = typer.Option(None, help="A features RUN of the same SAE (top tokens in the report)."),
    sae: str = typer.Option("default", help=SAE_HELP),
    ce_tokens: int = typer.Option(8192, help="Held-out tokens for CE loss and KL."),
    generate: int = GENERATE_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
    config: DebiasConfig = None,
    files: BiasDataFiles = None,
) -> None:
    """Build a debiasing intervention (chosen on training data only), evaluate before/after, write a report.

    Example: saescope bias debias --method erase --features auto --out debias
    """
    from saescope.bias.debias.run import run_debias
    from saescope.features.run import FeatureRun

    data = files.load()
    feature_run = FeatureRun.load(run) if run is not None else None
    lm, sae_module, hook = load_model_and_sae(sae, None, config.hook, device, dtype, purpose="measure")
    result = run_debias(lm, sae_module, replace(config, hook=hook), data=data, feature_run=feature_run,
                        ce_tokens=ce_tokens, sae_name=sae, progress=not json_out, generate=generate)
    result.save(out)
    if json_out:
        print_json({**result.to_dict(), "out": str(out)})
        return
    console.print(f"{result.method}: {result.candidate}, features {result.features or '(none)'}")
    _print_evaluation(result.evaluation, False)
    console.print(f"report: {out / 'report.html'}")
