"""``saescope steer`` (steered vs unsteered generation), ``steer sweep``, and ``align score``."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import (
    DEVICE_OPTION,
    DTYPE_OPTION,
    JSON_OPTION,
    SAE_HELP,
    console,
    load_model_and_sae,
    parse_floats,
    parse_ids,
    print_json,
)
from saescope.errors import SaescopeError

steer_app = typer.Typer(help="Steer generation with SAE features, alignment scores or saved interventions.")
align_app = typer.Typer(no_args_is_help=True, help="Score SAE features against an alignment set (IBM's method).")


@steer_app.callback(invoke_without_command=True)
def steer(
    ctx: typer.Context,
    prompt: list[str] = typer.Option(None, help="Prompt (repeat for several)."),
    feature: str = typer.Option(None, help="Feature id(s), comma-separated."),
    coeff: float = typer.Option(8.0, help="add: coefficient; set: value; scale: factor; ablate: value (0); cap: ceiling."),
    op: str = typer.Option("add", help="add | set | ablate | scale | cap."),
    scale: str = typer.Option("none", help="add only: none | max_activation (needs --run) | residual_norm."),
    run: Path = typer.Option(None, help="A features RUN (for --scale max_activation)."),
    method: str = typer.Option(None, help="Alignment steering: swap | weight | add (needs --scores)."),
    scores: Path = typer.Option(None, help="Scores file from `saescope align score`."),
    intervention: Path = typer.Option(None, help="A saved intervention file (JSON) or edit folder."),
    save: Path = typer.Option(None, help="Also save the intervention built from the options to this file."),
    sae: str = typer.Option("default", help=SAE_HELP),
    temperature: float = typer.Option(1.0, help="0 = greedy."),
    n: int = typer.Option(1, help="Samples per prompt (paired seeds)."),
    max_new_tokens: int = typer.Option(50),
    seed: int = typer.Option(0),
    chat: bool = typer.Option(False, "--chat", help="Apply the model's chat template."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Generate with and without an intervention, same seeds, side by side.

    Example: saescope steer --feature 123 --coeff 8 --n 3 --prompt "What is your favorite animal?" --chat
    """
    if ctx.invoked_subcommand is not None:
        return
    if not prompt:
        raise SaescopeError("give at least one --prompt")
    from saescope.model.generation import generate

    lm, sae_module, _ = load_model_and_sae(sae, None, None, device, dtype)
    built = build_intervention(sae_module, feature, coeff, op, scale, run, method, scores, intervention)
    if save is not None:
        built.save(save)
    plain = generate(lm, prompt, None, max_new_tokens, temperature, n, seed, chat)
    steered = generate(lm, prompt, built, max_new_tokens, temperature, n, seed, chat)
    if json_out:
        print_json({"intervention": built.to_dict() if method is None else {"method": method},
                    "results": [{"prompt": p, "unsteered": u, "steered": s} for p, u, s in zip(prompt, plain, steered)]})
        return
    from rich.table import Table

    for text, unsteered, steered_texts in zip(prompt, plain, steered):
        table = Table(title=repr(text), show_lines=True)
        table.add_column("seed")
        table.add_column("unsteered")
        table.add_column("steered")
        for i, (u, s) in enumerate(zip(unsteered, steered_texts)):
            table.add_row(str(seed + i), u, s)
        console.print(table)


def build_intervention(sae, feature, coeff, op, scale, run, method, scores, intervention):
    """The intervention the steer options describe (exactly one of --feature, --method, --intervention)."""
    from saescope.editing.weight_edit import load_applicable
    from saescope.steering import AlignmentSteering, FeatureEdit, FeatureSteering

    chosen = [x is not None for x in (feature, method, intervention)]
    if sum(chosen) != 1:
        raise SaescopeError("give exactly one of --feature, --method (with --scores) or --intervention")
    if intervention is not None:
        return load_applicable(intervention)
    if method is not None:
        from saescope.steering import AlignmentScores

        if scores is None:
            raise SaescopeError("--method needs --scores (from `saescope align score`)")
        return AlignmentSteering(sae, AlignmentScores.load(scores, sae).scores, method)
    ids = parse_ids(feature, "--feature")
    maxima = None
    if scale == "max_activation":
        from saescope.features.run import FeatureRun

        if run is None:
            raise SaescopeError("--scale max_activation needs --run")
        loaded = FeatureRun.load(run)
        loaded.check_sae(sae)
        maxima = {f: float(loaded.stats["max"].iloc[loaded.check_feature(f)]) for f in ids}
    return FeatureSteering(sae, [FeatureEdit(f, op, coeff) for f in ids], scale=scale, max_activations=maxima)


@steer_app.command("sweep")
def sweep(
    feature: int = typer.Option(..., help="Feature id."),
    coeffs: str = typer.Option("-8,0,4,8,16", help="Comma-separated coefficients."),
    prompts: Path = typer.Option(None, help="File with one prompt per line (default: a built-in set)."),
    description: str = typer.Option(None, help="What the feature means (for embedding similarity)."),
    out: Path = typer.Option(Path("sweep"), help="Folder for sweep.parquet and sweep.png."),
    sae: str = typer.Option("default"),
    n: int = typer.Option(1, help="Samples per prompt."),
    max_new_tokens: int = typer.Option(40),
    temperature: float = typer.Option(1.0),
    seed: int = typer.Option(0),
    chat: bool = typer.Option(False, "--chat"),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Concept strength, fluency and diversity against the steering coefficient; table + PNG."""
    from saescope.corpus import read_prompts
    from saescope.resources import data_path
    from saescope.steering.sweep import plot_sweep, steering_sweep
    from saescope.storage import atomic_path

    values = parse_floats(coeffs, "--coeffs")
    texts = read_prompts(prompts) if prompts is not None else read_prompts(data_path("alignment", "reference.txt"))[:5]
    lm, sae_module, _ = load_model_and_sae(sae, None, None, device, dtype)
    table = steering_sweep(lm, sae_module, feature, values, texts, description, max_new_tokens, n, seed,
                           temperature, chat)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "sweep.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    plot_sweep(table, out / "sweep.png", f"feature {feature}")
    if json_out:
        print_json(table.to_dict(orient="records"))
    else:
        console.print(table.drop(columns="example").to_string(index=False))
        console.print(f"wrote {out / 'sweep.parquet'} and {out / 'sweep.png'}")


@align_app.command("score")
def score(
    align: Path = typer.Option(None, help="Alignment prompts, one per line (default: the shipped example)."),
    ref: Path = typer.Option(None, help="Reference prompts, one per line (default: the shipped example)."),
    out: Path = typer.Option(..., help="Scores file to write (JSON)."),
    sae: str = typer.Option("default"),
    top: int = typer.Option(10, help="Best-scored features to list."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Score every SAE feature 0..1 against an alignment set; report coverage as the uncertainty."""
    from saescope.corpus import read_prompts
    from saescope.resources import data_path
    from saescope.steering import score_features

    align_prompts = read_prompts(align or data_path("alignment", "gender_fair_align.txt"))
    ref_prompts = read_prompts(ref or data_path("alignment", "reference.txt"))
    lm, sae_module, hook = load_model_and_sae(sae, None, None, device, dtype)
    result = score_features(lm, sae_module, align_prompts, ref_prompts, hook)
    result.save(out)
    best = result.scores.topk(min(top, len(result.scores)))
    summary = {"coverage": result.coverage, "n_align": result.n_align, "n_ref": result.n_ref,
               "top_features": [{"feature": int(i), "score": float(s)} for s, i in zip(*best)]}
    if json_out:
        print_json(summary)
        return
    console.print(f"coverage {result.coverage:.3f} (share of features that fire on the reference set)")
    for row in summary["top_features"]:
        console.print(f"  feature {row['feature']:>6}  score {row['score']:.3f}")
