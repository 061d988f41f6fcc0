"""``saescope activations cache``: run the model once and keep a hook point's activations as shards."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import DEVICE_OPTION, DTYPE_OPTION, MODEL_OPTION, console

activations_app = typer.Typer(no_args_is_help=True, help="Cache activations on disk (safetensors shards + index).")


@activations_app.command("cache")
def cache(
    hook: str = typer.Option(..., help="Hook point(s), comma-separated (e.g. blocks.12.hook_resid_post)."),
    tokens: int = typer.Option(..., help="About how many tokens to cache."),
    out: Path = typer.Option(..., help="Cache folder: one sub-folder of shards per hook point + progress.json."),
    model: str = MODEL_OPTION,
    corpus: str = typer.Option("embedded", help="'embedded', a text/JSONL file or a folder."),
    context: int = typer.Option(128, help="Tokens per window."),
    batch_size: int = typer.Option(16, help="Windows per forward pass."),
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
) -> None:
    """Run the model over a corpus once and write each hook point's activations (bfloat16 shards, with the token
    ids and corpus positions of every row); run again to resume. `sae train --activations OUT/HOOK` and
    `features extract --activations OUT/HOOK` (both also with --workers N) read them instead of running the model.

    Example: saescope activations cache --hook blocks.6.hook_resid_post --tokens 2000000 --out acts
    """
    from saescope.activations.cache import cache_activations
    from saescope.activations.layout import cached_tokens
    from saescope.errors import SaescopeError
    from saescope.model.loading import load_model

    hooks = [h.strip() for h in hook.split(",") if h.strip()]
    if tokens <= 0 or context < 2 or batch_size <= 0:
        raise SaescopeError("--tokens and --batch-size must be positive and --context at least 2")
    lm = load_model(model, device=device, dtype=dtype)
    folder = cache_activations(lm, hooks, tokens, out, corpus=corpus, context=context, model_batch=batch_size)
    for name in hooks:
        console.print(f"{folder / name}: {cached_tokens(folder / name):,} tokens")
