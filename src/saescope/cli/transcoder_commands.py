"""``saescope transcoders ...``: train and evaluate per-layer transcoders (MLP input → MLP output)."""

from __future__ import annotations

import typer

from saescope.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    MEASURE_DTYPE_OPTION,
    MODEL_OPTION,
    config_options,
    console,
    print_json,
)
from saescope.sae.transcoder_training import TranscoderConfig

transcoders_app = typer.Typer(no_args_is_help=True,
                              help="Train and evaluate per-layer transcoders (circuit-tracer's layout).")


@transcoders_app.command("train")
@config_options(TranscoderConfig, exclude=("layers",))
def train(
    out: str = typer.Option("default", help="Output folder: config.yaml + layer_<i>.safetensors (circuit-tracer) "
                                            "+ checkpoint; 'default': the model's default set in the cache "
                                            "($SAESCOPE_HOME/transcoders/<model>/default), which --transcoders "
                                            "default reads."),
    layers: str = typer.Option("all", help="'all', '0,3,5' or '0-5'."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint."),
    config: TranscoderConfig = None,
) -> None:
    """Train a transcoder per layer from one pass over the corpus (every layer steps on every batch).

    Example: saescope transcoders train                  # the default set, cached (about an hour on 2 cores)
    Example: saescope transcoders train --layers all --features 1152 --k 16 --tokens 400000 --out quick
    """
    from dataclasses import replace

    from saescope.model.loading import load_model
    from saescope.sae.transcoder_training import parse_layers, train_transcoders
    from saescope.sae.transcoders import set_path

    lm = load_model(config.model, device=config.device, dtype=config.dtype)
    folder = set_path(out, lm.name)
    result = train_transcoders(replace(config, layers=parse_layers(layers)), folder, resume=resume, lm=lm)
    console.print(f"saved {len(result.layers)} transcoders ({result[result.layers[0]].d_sae} features each) to {folder}")


@transcoders_app.command("eval")
def evaluate(
    folder: str = typer.Argument("default", help="A transcoder-set folder (config.yaml + layer_<i>.safetensors), or "
                                                 "'default' (the cached set)."),
    tokens: int = typer.Option(20_000, help="Held-out tokens."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """MLP-output FVU per layer, and the model's CE with every MLP replaced by its transcoder.

    Example: saescope transcoders eval transcoders --tokens 20000
    """
    from saescope.model.loading import load_model
    from saescope.precision import MEASURE
    from saescope.sae.transcoder_eval import evaluate_transcoders
    from saescope.sae.transcoders import load_set

    lm = load_model(model, device=device, dtype=dtype, purpose=MEASURE)
    transcoders = load_set(folder, lm.name)
    result = evaluate_transcoders(lm, transcoders.to(device), tokens=tokens)
    if json_output:
        print_json(result.to_dict())
        return
    for layer, fvu in result.fvu.items():
        console.print(f"layer {layer:>3}  mlp_fvu {fvu:.4f}  l0 {result.l0[layer]:.1f}  "
                      f"dead {result.dead_fraction[layer]:.3f}")
    console.print(f"mlp_fvu_median {result.mlp_fvu_median:.4f}  CE clean {result.ce_clean:.4f}  replaced "
                  f"{result.ce_replaced:.4f} (+{100 * result.replaced_ce_increase:.1f} %)  MLPs zeroed {result.ce_zero:.4f}")
