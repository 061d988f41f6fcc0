"""``saescope features ...``: extract per-feature statistics over a corpus, and look at them."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import (
    DEVICE_OPTION,
    DTYPE_OPTION,
    JSON_OPTION,
    SAE_HELP,
    config_options,
    console,
    load_model_and_sae,
    parse_ids,
    print_json,
)
from saescope.errors import SaescopeError
from saescope.features.config import ExtractConfig
from saescope.features.sample_config import SampleConfig

features_app = typer.Typer(no_args_is_help=True, help="Per-feature statistics, top contexts, search, dashboards.")

STAT_COLUMNS = ["feature", "count", "log10_density", "mean", "std", "skewness", "kurtosis", "max", "top_tokens"]


@features_app.command("extract")
@config_options(ExtractConfig, flags={"top_k": "--top"})
def extract(
    out: Path = typer.Option(..., help="RUN folder to write."),
    sae: str = typer.Option("default", help=SAE_HELP),
    model: str = typer.Option(None, help="Model; default: the one the SAE names."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    workers: int = typer.Option(1, help="Processes on this machine (torchrun, gloo on CPU / NCCL on CUDA); "
                                        "the RUN is the same as with one."),
    config: ExtractConfig = None,
) -> None:
    """One streaming pass: statistics, top contexts, top tokens, histograms and logit effects of every feature.

    Example: saescope features extract --sae default --tokens 1000000 --out runs/default [--workers 2]
    """
    from saescope.features.extract import extract_features
    from saescope.parallel.context import distributed_context
    from saescope.parallel.launch import run_under_torchrun

    if workers != 1:
        run_under_torchrun(workers)
        return
    ctx = distributed_context(device)
    lm, sae_module, hook_name = load_model_and_sae(sae, model, config.hook, ctx.device(device), dtype)
    run = extract_features(lm, sae_module, out, config, hook=hook_name, resume=resume, sae_name=sae)
    m = run.manifest
    if ctx.is_main:
        console.print(f"wrote {out}: {m['tokens']:,} tokens, {m['d_sae']} features, {m['seconds']} s ({m['dtype']}, "
                      f"{ctx.world_size} worker{'s' * (ctx.world_size > 1)})")
        if "activations" in m and m["windows"] * m["context"] < m["tokens_requested"]:
            console.print(f"the cache held fewer than the {m['tokens_requested']:,} tokens asked for: all of it was read")


@features_app.command("sample")
@config_options(SampleConfig)
def sample(
    run: Path = typer.Argument(..., help="A RUN folder."),
    features: str = typer.Option("random:200", help="0-199 | 3,17,42 | top:kurtosis:200 | random:200 (alive features)."),
    sae: str = typer.Option("default", help="The SAE of the run."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    config: SampleConfig = None,
) -> None:
    """Contexts across each feature's activation range, and where it does not fire, on text the RUN never saw
    (RUN/samples.parquet: what `saescope explain` shows beside the top contexts and `saescope score` scores on).

    Example: saescope features sample runs/default --features random:200 --tokens 200000
    """
    from saescope.features.run import FeatureRun
    from saescope.features.samples import sample_contexts
    from saescope.features.selection import select_features

    loaded = FeatureRun.load(run)
    chosen = select_features(loaded, features, config.seed)
    lm, sae_module, _ = load_model_and_sae(sae, None, loaded.manifest["hook"], device, dtype)
    table = sample_contexts(lm, sae_module, loaded, chosen, config)
    console.print(f"wrote {run / 'samples.parquet'}: {len(table):,} contexts of {len(chosen)} features")


@features_app.command("table")
def table(
    run: Path = typer.Argument(..., help="A RUN folder."),
    sort: str = typer.Option("log10_density", help="Column to sort by."),
    ascending: bool = typer.Option(False, "--ascending", help="Smallest first."),
    n: int = typer.Option(30, help="Rows to show (0: all)."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON records."),
) -> None:
    """The one-row-per-feature table, sortable by any column."""
    from saescope.features.run import FeatureRun

    stats = FeatureRun.load(run).stats
    if sort not in stats.columns:
        raise SaescopeError(f"unknown column {sort!r}: use one of {', '.join(stats.columns)}")
    rows = stats.sort_values(sort, ascending=ascending)[STAT_COLUMNS]
    rows = rows.head(n) if n > 0 else rows
    if csv:
        rows.to_csv(typer.get_text_stream("stdout"), index=False)
    elif json_out:
        print_json(rows.to_dict(orient="records"))
    else:
        _print_table(rows)


@features_app.command("show")
def show(
    run: Path = typer.Argument(..., help="A RUN folder."),
    feature: int = typer.Argument(..., help="Feature id."),
    n: int = typer.Option(10, help="Examples to show."),
    json_out: bool = JSON_OPTION,
) -> None:
    """One feature: statistics, top tokens, top contexts (activating token highlighted), logit effects."""
    from saescope.features.run import FeatureRun

    loaded = FeatureRun.load(run)
    info = loaded.feature(feature)
    explained = loaded.explanations().get(feature, [])
    if json_out:
        print_json({"stats": info["stats"], "explanations": explained, "top_tokens": info["top_tokens"].token.tolist(),
                    "examples": info["examples"].head(n).drop(columns=["context_acts"]).to_dict(orient="records"),
                    "promoted": info["promoted"].token.tolist(), "suppressed": info["suppressed"].token.tolist()})
        return
    stats = info["stats"]
    console.print(f"[bold]feature {feature}[/bold]  fires on {int(stats['count']):,} tokens "
                  f"(log10 density {stats['log10_density']:.2f})  mean {stats['mean']:.4f}  std {stats['std']:.4f}  "
                  f"skew {stats['skewness']:.2f}  kurtosis {stats['kurtosis']:.2f}  max {stats['max']:.2f}")
    for row in explained:
        scores = "  ".join(f"{k} {v:.2f}" for k, v in row["scores"].items())
        console.print(f"[bold]explanation[/bold] ({row['explainer']}{' ' + row['model'] if row['model'] else ''}): "
                      f"{row['explanation'] or '(failed: ' + row['error'] + ')'}" + (f"  [{scores}]" if scores else ""))
    console.print("[bold]top tokens[/bold]: " + "  ".join(repr(t) for t in info["top_tokens"].token[:10]))
    console.print("[bold]promotes[/bold]: " + "  ".join(repr(t) for t in info["promoted"].token))
    console.print("[bold]suppresses[/bold]: " + "  ".join(repr(t) for t in info["suppressed"].token))
    console.print("[bold]top contexts[/bold]:")
    for row in info["examples"].head(n).itertuples():
        console.print(f"  {row.activation:7.2f}  " + highlight(row.context_tokens, row.context_acts, row.center),
                      soft_wrap=True)


def highlight(tokens: list[str], acts: list[float], center: int) -> str:
    """Rich markup: the activating token in reverse video, other firing tokens in colour."""
    from rich.markup import escape

    peak = max(acts) if len(acts) else 0.0
    parts = []
    for i, (token, act) in enumerate(zip(tokens, acts)):
        text = escape(token.replace("\n", "⏎"))
        if i == center:
            parts.append(f"[reverse bold]{text}[/reverse bold]")
        elif act > 0 and peak > 0:
            parts.append(f"[{'bold red' if act > 0.5 * peak else 'red'}]{text}[/]")
        else:
            parts.append(text)
    return "".join(parts)


@features_app.command("search")
def search(
    run: Path = typer.Argument(..., help="A RUN folder."),
    token: str = typer.Option(None, help="Features that fire most on this token (e.g. ' she')."),
    text: str = typer.Option(None, help="Features active on this text (runs the model)."),
    explanation: str = typer.Option(None, help="Features whose explanation is closest in meaning to this text."),
    n: int = typer.Option(15, help="How many features."),
    sae: str = typer.Option("default", help="With --text: the SAE of the run."),
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Find features by a token they fire on, or by a text."""
    from saescope.features.run import FeatureRun
    from saescope.features.search import features_for_text, features_for_token

    loaded = FeatureRun.load(run)
    if sum(x is not None for x in (token, text, explanation)) != 1:
        raise SaescopeError("give exactly one of --token, --text or --explanation")
    if explanation is not None:
        from saescope.autointerp.search import features_by_explanation

        rows = features_by_explanation(loaded, explanation, n)
    elif token is not None:
        rows = features_for_token(loaded, token, n)
    else:
        lm, sae_module, hook_name = load_model_and_sae(sae, None, loaded.manifest["hook"], device, None)
        loaded.check_sae(sae_module)
        rows = features_for_text(loaded, lm, sae_module, hook_name, text, n)
    if json_out:
        print_json(rows.to_dict(orient="records"))
    else:
        _print_table(rows)


def _print_table(rows) -> None:
    from rich.table import Table

    table = Table()
    for column in rows.columns:
        table.add_column(column)
    for record in rows.itertuples(index=False):
        table.add_row(*[_cell(v) for v in record])
    console.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "__len__") and not isinstance(value, str):
        return " ".join(repr(v) for v in list(value)[:8])
    return str(value)


@features_app.command("dashboard")
def dashboard(
    run: Path = typer.Argument(..., help="A RUN folder."),
    out: Path = typer.Option(..., help="Folder for the HTML pages."),
    features: str = typer.Option(None, help="Comma-separated ids (default: every feature that fires)."),
) -> None:
    """Static offline HTML: a sortable index and one page per feature."""
    from saescope.features.dashboard import write_dashboard
    from saescope.features.run import FeatureRun

    folder = write_dashboard(FeatureRun.load(run), out, parse_ids(features, "--features"))
    console.print(f"open {folder / 'index.html'}")


@features_app.command("export-neuronpedia")
def export_neuronpedia_command(
    run: Path = typer.Argument(..., help="A RUN folder."),
    out: Path = typer.Option(..., help="Output folder."),
    model_id: str = typer.Option(..., help="Neuronpedia's id of the model (e.g. smollm2-135m-instruct)."),
    sae_set: str = typer.Option(..., help="The SAE set's name on Neuronpedia (e.g. res-saescope-4608)."),
    layer: int = typer.Option(None, help="Layer (default: from the RUN's hook point)."),
    per_batch: int = typer.Option(128, help="Features per batch file (SAEDashboard's n_features_per_batch)."),
    features: str = typer.Option(None, help="Comma-separated ids (default: every feature that fires)."),
    export_format: str = typer.Option("saedashboard", "--format",
                                      help="saedashboard: batch-<i>.json for a self-hosted Neuronpedia's upload; "
                                           "neuronpedia: a Neuronpedia export (features/, activations/, "
                                           "explanations/ as batch-<i>.jsonl.gz) that Neuronpedia imports."),
    creator: str = typer.Option("saescope", help="Creator name and id in a --format neuronpedia export."),
) -> None:
    """Write the RUN as Neuronpedia feature batches: SAEDashboard's batch-<i>.json, or a Neuronpedia export.

    Example: saescope features export-neuronpedia runs/default --out np --model-id smollm2-135m-instruct --sae-set res-sc
    """
    from saescope.errors import SaescopeError
    from saescope.features.neuronpedia_export import export_neuronpedia
    from saescope.features.neuronpedia_hosted import export_neuronpedia_hosted
    from saescope.features.run import FeatureRun

    ids = parse_ids(features, "--features")
    if export_format == "neuronpedia":
        folder = export_neuronpedia_hosted(FeatureRun.load(run), out, model_id, sae_set, layer, per_batch, ids, creator)
        console.print(f"wrote a Neuronpedia export to {folder}")
    elif export_format == "saedashboard":
        written = export_neuronpedia(FeatureRun.load(run), out, model_id, sae_set, layer, per_batch, ids)
        console.print(f"wrote {len(written)} batch file(s) and export.json to {out}")
    else:
        raise SaescopeError(f"unknown --format {export_format!r}: use saedashboard or neuronpedia")
