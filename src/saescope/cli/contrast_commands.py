"""``saescope contrast fit|eval``: contrastive steering vectors from prompt pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import (
    DEVICE_OPTION,
    DTYPE_OPTION,
    JSON_OPTION,
    config_options,
    console,
    load_model_and_sae,
    parse_floats,
    print_json,
)
from saescope.steering.contrast.config import ContrastFitConfig

contrast_app = typer.Typer(no_args_is_help=True, help="CAA vectors, SAE features and sparse fits from prompt pairs.")


@contrast_app.command("fit")
@config_options(ContrastFitConfig)
def fit(
    pairs: str = typer.Option(..., help="JSONL of {positive, negative} pairs, or a shipped set: gender_train, "
                                        "gender_heldout, gender, agreeableness."),
    out: Path = typer.Option(..., help="Output folder."),
    sae: str = typer.Option("default"),
    run: Path = typer.Option(None, help="A features RUN, to show each cluster's top tokens."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
    config: ContrastFitConfig = None,
) -> None:
    """CAA vector, significant SAE features, their clusters and a sparse SAE fit; three intervention files."""
    from saescope.features.run import FeatureRun
    from saescope.steering.contrast.fit import fit_contrast
    from saescope.steering.contrast.pairs import pairs_path, read_pairs

    pair_list = read_pairs(pairs_path(pairs))
    lm, sae_module, hook_name = load_model_and_sae(sae, None, config.hook, device, dtype)
    loaded_run = None
    if run is not None:
        loaded_run = FeatureRun.load(run)
        loaded_run.check_sae(sae_module)
    report = fit_contrast(lm, sae_module, pair_list, out, config, run=loaded_run, hook=hook_name)
    if json_out:
        print_json(report)
        return
    chosen = report["sparse_fit"]["chosen"]
    console.print(f"{report['n_pairs']} pairs ({report['pairs_aligned_by_position']} aligned by position); "
                  f"CAA norm {report['caa_norm']:.2f} = {report['caa_norm_relative']:.3f} x median residual norm")
    console.print(f"{report['n_significant_features']} significant features; {len(report['clusters'])} clusters")
    console.print(f"sparse fit: R² {chosen['r2']:.3f} with {chosen['n_features']} features, "
                  f"cosine to CAA {chosen['cosine_to_caa']:.3f}")
    console.print(f"wrote {out}: {', '.join(report['interventions'])} ({report['seconds']} s, "
                  f"{report['forward_seconds']} s in the model)")


@contrast_app.command("eval")
def evaluate(
    folder: Path = typer.Argument(..., help="A `contrast fit` output folder."),
    pairs: str = typer.Option(..., help="Held-out pairs (JSONL) or a shipped set name."),
    multipliers: str = typer.Option("-4,-2,0,2,4", help="Comma-separated multipliers."),
    max_kl: float = typer.Option(0.1, help="KL budget (nats/token) for the best-multiplier summary."),
    model: str = typer.Option(None, help="Model; default: the one the fit was made for."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Steering effect on held-out pairs, and KL / perplexity on neutral text; table + PNG in FOLDER."""
    from saescope.model.loading import load_model
    from saescope.steering.contrast.evaluate import best_multipliers, evaluate_contrast, fitted_model, plot_contrast
    from saescope.steering.contrast.pairs import pairs_path, read_pairs
    from saescope.storage import atomic_path

    pair_list = read_pairs(pairs_path(pairs))
    values = parse_floats(multipliers, "--multipliers")
    lm = load_model(model or fitted_model(folder), device=device, dtype=dtype)
    table = evaluate_contrast(lm, folder, pair_list, values)
    with atomic_path(folder / "eval.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    plot_contrast(table, folder / "eval.png")
    best = best_multipliers(table, max_kl)
    if json_out:
        print_json({"table": table.to_dict(orient="records"), "best": best.to_dict(orient="records")})
        return
    console.print(table.to_string(index=False))
    console.print(f"[bold]best multiplier per vector with KL <= {max_kl}[/bold]")
    console.print(best.to_string(index=False) if not best.empty else "  none within the KL budget")
