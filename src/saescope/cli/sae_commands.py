"""``saescope sae ...``: train, evaluate and inspect sparse autoencoders."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import (
    DEVICE_OPTION,
    DTYPE_OPTION,
    JSON_OPTION,
    MEASURE_DTYPE_OPTION,
    MODEL_OPTION,
    SAE_HELP,
    config_options,
    console,
    load_model_and_sae,
    print_json,
)
from saescope.sae.suite_config import SuiteConfig
from saescope.sae.train_config import TrainConfig

sae_app = typer.Typer(no_args_is_help=True, help="Train, evaluate and inspect SAEs.")


@sae_app.command("train")
@config_options(TrainConfig)
def train(
    out: Path = typer.Option(..., help="Output folder (SAELens format + checkpoint + log)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint."),
    workers: int = typer.Option(1, help="Data-parallel processes (torchrun; reads --activations, a cache)."),
    config: TrainConfig = None,
) -> None:
    """Train an SAE on activations streamed from the model (or read from a cache: --activations).

    Example: saescope sae train --hook blocks.12.hook_resid_post --features 4608 --k 32 --tokens 2000000 --out my_sae
    """
    from saescope.parallel.context import distributed_context
    from saescope.parallel.launch import run_under_torchrun
    from saescope.sae.training import train_sae

    if workers != 1:
        run_under_torchrun(workers)
        return
    sae = train_sae(config, out, resume=resume)
    if distributed_context(config.device).is_main:
        console.print(f"saved {sae.cfg.activation} SAE ({sae.d_in} -> {sae.d_sae}) to {out}")


@sae_app.command("train-suite")
@config_options(SuiteConfig)
def train_suite(
    out: Path = typer.Option(..., help="Output folder: one SAE folder per hook point + suite.json."),
    config: SuiteConfig = None,
) -> None:
    """Train SAEs at several layers from one shared forward pass over the corpus (resumable: run again).

    Example: saescope sae train-suite --layers 2,6,9 --features 2304 --k 48 --tokens 500000 --out my_suite
    """
    from saescope.sae.suite import train_suite as run

    saes = run(config, out)
    for hook, sae in saes.items():
        console.print(f"{hook}: {sae.cfg.activation} SAE ({sae.d_in} -> {sae.d_sae}) in {out / hook}")


@sae_app.command("eval")
def evaluate(
    sae: str = typer.Argument("default", help=SAE_HELP),
    tokens: int = typer.Option(50_000, help="Held-out tokens to evaluate on."),
    model: str = typer.Option(None, help="Model; default: the one the SAE names."),
    hook: str = typer.Option(None, help="Hook point; default: the one the SAE names."),
    corpus: str = typer.Option("embedded", help="'embedded' (its held-out split), or a .txt/.jsonl file."),
    batch_size: int = typer.Option(8, help="Windows per forward pass."),
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Standard SAE metrics (SAELens names) on held-out text; for one layer of a transcoder set, its MLP-output
    FVU, L0, dead share, and the CE with that MLP replaced (``transcoders eval`` does every layer at once).

    Example: saescope sae eval default --tokens 50000 --json
    """
    from saescope.precision import MEASURE, dtype_name, precision_record
    from saescope.sae.evaluation import evaluate_sae

    lm, sae_module, hook_name = load_model_and_sae(sae, model, hook, device, dtype, MEASURE)
    if sae_module.cfg.metadata.get("kind") == "transcoder":  # one layer of a set: MLP-output figures
        from saescope.sae.transcoder_eval import evaluate_layer

        result = evaluate_layer(lm, sae_module, tokens=tokens, batch_size=batch_size, progress=not json_out)
    else:
        split = "heldout" if corpus == "embedded" else "all"
        result = evaluate_sae(lm, sae_module, hook_name, tokens=tokens, corpus=corpus, split=split,
                              batch_size=batch_size, progress=not json_out).to_dict()
    result["dtype"] = dtype_name(lm.dtype)
    result["precision"] = precision_record(lm.dtype, MEASURE)
    if json_out:
        print_json(result)
        return
    for key, value in result.items():
        if key != "precision":
            console.print(f"{key:>22}  {value:.4f}" if isinstance(value, float) else f"{key:>22}  {value}")


@sae_app.command("bench")
def bench(
    saes: list[str] = typer.Argument(..., help="SAEs to compare: 'default', folders or files (as for sae eval)."),
    out: Path = typer.Option(..., help="Folder: <eval>/<sae>_eval_results.json (SAEBench's schema), table.csv, "
                                       "comparison.png."),
    evals: str = typer.Option("core,sparse_probing",
                              help="Comma-separated: core, sparse_probing, scr, tpp, absorption, meta_structure, "
                                   "autointerp."),
    autointerp_url: str = typer.Option(None, help="autointerp: an OpenAI-compatible endpoint "
                                                  "(default: the embedded chat model)."),
    autointerp_model: str = typer.Option(None, help="autointerp: the endpoint's model name."),
    autointerp_latents: int = typer.Option(20, help="autointerp: latents explained and scored."),
    tokens: int = typer.Option(50_000, help="Held-out tokens of the core eval."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
) -> None:
    """SAEBench-compatible evals of several SAEs, one JSON per SAE and eval that SAEBench's readers load.

    Example: saescope sae bench default runs/mine --evals core,sparse_probing,scr,tpp --out bench
    """
    from saescope.autointerp.saebench import EXTRA
    from saescope.cli.common import check_folder
    from saescope.errors import SaescopeError
    from saescope.precision import MEASURE
    from saescope.sae.bench.run import bench_sae, check_evals
    from saescope.sae.formats import load_sae

    check_folder(out)
    check_evals(evals, EXTRA)
    if autointerp_latents <= 0:
        raise SaescopeError(f"--autointerp-latents must be positive, got {autointerp_latents}")
    if tokens <= 0:
        raise SaescopeError(f"--tokens must be positive, got {tokens}")
    lm, first, _ = load_model_and_sae(saes[0], model, None, device, dtype, MEASURE)
    loaded = {}
    for i, (spec, sae) in enumerate(zip(saes, [first, *(load_sae(s, device=device) for s in saes[1:])])):
        name = Path(spec).name or spec
        loaded[name if name not in loaded else f"{name}-{i}"] = sae
    options: dict = {"autointerp": {"n_latents": autointerp_latents}}
    if autointerp_url:
        from saescope.autointerp.llm.cache import CachedClient
        from saescope.autointerp.llm.http import OpenAIChatClient

        out.mkdir(parents=True, exist_ok=True)
        options["autointerp"]["client"] = CachedClient(OpenAIChatClient(autointerp_url, autointerp_model or "default"),
                                                       out / "autointerp-cache.sqlite")
    table = bench_sae(lm, loaded, evals, out, tokens=tokens, options=options, extra=EXTRA)
    console.print(table.T.to_string(header=False))
    console.print(f"wrote {out}/table.csv, {out}/comparison.png and one JSON per SAE and eval")


@sae_app.command("synth")
def synth(
    archs: str = typer.Option("topk,batchtopk,matryoshka", help="Comma-separated: topk, batchtopk, matryoshka, relu, "
                                                             "jumprelu."),
    steps: int = typer.Option(2000, help="Training steps of each SAE (1,024 samples each)."),
    seed: int = typer.Option(0, help="Seed of the world and of the SAEs' initialisation."),
    out: Path | None = typer.Option(None, help="Also write the rows to this JSON file."),
) -> None:
    """Train each architecture on a synthetic world with known hierarchical features (equal width and L0)
    and report how well it recovers them: F1 of each matched latent's firing, MCC of the decoder.

    Example: saescope sae synth --archs topk,batchtopk,matryoshka --steps 2000
    """
    from saescope.errors import SaescopeError
    from saescope.sae.bench.synthetic import World, recovery
    from saescope.storage import write_json

    if steps <= 0:
        raise SaescopeError(f"--steps must be positive, got {steps}")
    if out is not None and out.is_dir():
        raise SaescopeError(f"{out} is a folder: --out must name a JSON file")
    rows = recovery(tuple(a.strip() for a in archs.split(",") if a.strip()), steps=steps, world=World.make(seed=seed),
                    seed=seed)
    for row in rows:
        console.print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if out is not None:
        write_json(out, {"seed": seed, "steps": steps, "rows": rows})


@sae_app.command("top")
def top_features(
    text: str = typer.Option(..., help="The text to encode."),
    sae: str = typer.Option("default", help=SAE_HELP),
    n: int = typer.Option(10, help="How many features to list."),
    model: str = MODEL_OPTION,
    hook: str = typer.Option(None),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """The features most active on a text, with the tokens they fire on.

    Example: saescope sae top --text "The nurse said that she was tired."
    """
    from saescope.sae.text import top_features_of_text

    lm, sae_module, hook_name = load_model_and_sae(sae, model, hook, device, dtype)
    rows = top_features_of_text(lm, sae_module, hook_name, text, n)
    if json_out:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"top features at {hook_name}: {text!r}")
    for column in ("feature", "max act", "on token", "fires on"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["feature"]), f"{row['max_activation']:.2f}", repr(row["max_token"]),
                      " ".join(repr(t) for t in row["tokens"]))
    console.print(table)
