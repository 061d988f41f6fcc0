"""``saescope sae ...``: train, evaluate and inspect sparse autoencoders."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import console, load_model_and_sae, print_json

sae_app = typer.Typer(no_args_is_help=True, help="Train, evaluate and inspect SAEs.")


@sae_app.command("train")
def train(
    out: Path = typer.Option(..., help="Output folder (SAELens format + checkpoint + log)."),
    model: str = typer.Option(None, help="Hub id or local folder; default: the embedded model."),
    hook: str = typer.Option("blocks.12.hook_resid_post", help="Hook point to train on."),
    features: int = typer.Option(4608, help="Number of SAE features (d_sae)."),
    activation: str = typer.Option("topk", help="topk | batchtopk | relu | jumprelu."),
    k: int = typer.Option(32, help="Active features per token (topk, batchtopk)."),
    tokens: int = typer.Option(2_000_000, help="Training tokens (across all epochs)."),
    epochs: int = typer.Option(1, help=">1: cache the first pass's activations on disk and replay them."),
    batch_size: int = typer.Option(2048, help="Tokens per optimizer step."),
    lr: float = typer.Option(None, help="Learning rate; default 2e-4/sqrt(features/16384)."),
    sparsity_coeff: float = typer.Option(0.0, help="L1 (relu) or L0 (jumprelu) coefficient."),
    corpus: str = typer.Option("embedded", help="'embedded', or a .txt / .jsonl file."),
    context: int = typer.Option(128, help="Tokens per window."),
    checkpoint_every: int = typer.Option(250, help="Steps between checkpoints."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("bfloat16", help="Model dtype for the forward pass (the SAE trains in float32)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint."),
    keep_activations: bool = typer.Option(False, "--keep-activations", help="Keep the epochs' activation cache."),
) -> None:
    """Train an SAE on activations streamed from the model.

    Example: saescope sae train --hook blocks.12.hook_resid_post --features 4608 --k 32 --tokens 2000000 --out my_sae
    """
    from saescope.training import TrainConfig, train_sae

    config = TrainConfig(hook=hook, model=model, features=features, activation=activation,
                         k=k if activation in ("topk", "batchtopk") else None, tokens=tokens, epochs=epochs,
                         batch_size=batch_size, lr=lr, sparsity_coeff=sparsity_coeff, corpus=corpus,
                         context=context, checkpoint_every=checkpoint_every, seed=seed, device=device, dtype=dtype,
                         keep_activations=keep_activations)
    sae = train_sae(config, out, resume=resume)
    console.print(f"saved {sae.cfg.activation} SAE ({sae.d_in} -> {sae.d_sae}) to {out}")


@sae_app.command("eval")
def evaluate(
    sae: str = typer.Argument("default", help="'default' (the bundled SAE) or an SAE folder."),
    tokens: int = typer.Option(50_000, help="Held-out tokens to evaluate on."),
    model: str = typer.Option(None, help="Model; default: the one the SAE names."),
    hook: str = typer.Option(None, help="Hook point; default: the one the SAE names."),
    corpus: str = typer.Option("embedded", help="'embedded' (its held-out split), or a .txt/.jsonl file."),
    batch_size: int = typer.Option(8, help="Windows per forward pass."),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option(None, help="Model dtype (default float32)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Standard SAE metrics (SAELens names) on held-out text.

    Example: saescope sae eval default --tokens 50000 --json
    """
    from saescope.evaluation import evaluate_sae

    lm, sae_module, hook_name = load_model_and_sae(sae, model, hook, device, dtype)
    split = "heldout" if corpus == "embedded" else "all"
    result = evaluate_sae(lm, sae_module, hook_name, tokens=tokens, corpus=corpus, split=split,
                          batch_size=batch_size, progress=not json_out).to_dict()
    if json_out:
        print_json(result)
        return
    for key, value in result.items():
        console.print(f"{key:>22}  {value:.4f}" if isinstance(value, float) else f"{key:>22}  {value}")


@sae_app.command("top")
def top_features(
    text: str = typer.Option(..., help="The text to encode."),
    sae: str = typer.Option("default", help="'default' or an SAE folder."),
    n: int = typer.Option(10, help="How many features to list."),
    model: str = typer.Option(None),
    hook: str = typer.Option(None),
    device: str = typer.Option("cpu"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """The features most active on a text, with the tokens they fire on.

    Example: saescope sae top --text "The nurse said that she was tired."
    """
    from saescope.inspect import top_features_of_text

    lm, sae_module, hook_name = load_model_and_sae(sae, model, hook, device, None)
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
