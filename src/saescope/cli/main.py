"""Entry point of the ``saescope`` command: sub-commands, and one-line errors for user mistakes."""

from __future__ import annotations

import os
import sys

import typer

from saescope.cli.bias_commands import bias_app, debias
from saescope.cli.common import console, print_json
from saescope.cli.contrast_commands import contrast_app
from saescope.cli.features_commands import features_app
from saescope.cli.sae_commands import sae_app
from saescope.cli.steer_commands import align_app, steer_app
from saescope.errors import SaescopeError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="saescope: find, explain and act on the SAE features behind a model's behaviour.")
app.add_typer(sae_app, name="sae")
app.add_typer(features_app, name="features")
app.add_typer(steer_app, name="steer")
app.add_typer(align_app, name="align")
app.add_typer(contrast_app, name="contrast")
app.add_typer(bias_app, name="bias")
app.command("debias")(debias)


@app.command()
def info(model: str = typer.Option(None, help="Hub id or local folder; default: the embedded model."),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The model's name, layers, width and hook points."""
    from saescope.models import load_model
    from saescope.hooks import layer_list_path

    lm = load_model(model)
    blocks = layer_list_path(lm.model)
    kinds = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    result = {"model": lm.name, "architecture": type(lm.model).__name__, "n_layers": lm.n_layers,
              "d_model": lm.d_model, "vocab_size": int(lm.model.config.vocab_size),
              "n_params": sum(p.numel() for p in lm.model.parameters()), "blocks_module": blocks,
              "hook_points": [f"blocks.{layer}.hook_{kind}" for layer in range(lm.n_layers) for kind in kinds]}
    if json_out:
        print_json(result)
        return
    for key, value in result.items():
        if key != "hook_points":
            console.print(f"[bold]{key}[/bold]: {value}")
    console.print(f"[bold]hook points[/bold]: blocks.{{0..{lm.n_layers - 1}}}.hook_{{{','.join(kinds)}}} "
                  f"or module paths like {blocks}.0")


def run() -> None:
    """Console-script entry: user errors print one line to stderr and exit 2, never a traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        app(standalone_mode=False)
    except SaescopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except __import__("click").ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    run()
