"""Entry point of the ``saescope`` command: sub-commands, and one-line errors for user mistakes."""

from __future__ import annotations

import os
import sys

import click
import typer

from saescope.cli.activation_commands import activations_app
from saescope.cli.app_command import app_command
from saescope.cli.autointerp_commands import explain_command, score_command, serve_llm_command
from saescope.cli.bias_commands import bias_app, debias
from saescope.cli.circuit_commands import circuit_app
from saescope.cli.contrast_commands import contrast_app
from saescope.cli.edit_commands import edit_app
from saescope.cli.features_commands import features_app
from saescope.cli.gender_vector_command import gender_vector
from saescope.cli.generate_command import generate_command
from saescope.cli.graph_commands import graph_app
from saescope.cli.model_commands import info
from saescope.cli.sae_commands import sae_app
from saescope.cli.shift_commands import shift_app
from saescope.cli.steering_commands import align_app, steer_app
from saescope.cli.transcoder_commands import transcoders_app
from saescope.errors import SaescopeError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="saescope: find, explain and act on the SAE features behind a model's behaviour.")
app.add_typer(sae_app, name="sae")
app.add_typer(transcoders_app, name="transcoders")
app.add_typer(graph_app, name="graph")
app.add_typer(activations_app, name="activations")
app.add_typer(features_app, name="features")
app.add_typer(steer_app, name="steer")
app.add_typer(align_app, name="align")
app.add_typer(contrast_app, name="contrast")
app.add_typer(bias_app, name="bias")
app.add_typer(circuit_app, name="circuit")
app.add_typer(edit_app, name="edit")
bias_app.add_typer(shift_app, name="shift")
bias_app.command("gender-vector")(gender_vector)
# Earlier places of three bias studies, kept as hidden aliases.
app.add_typer(shift_app, name="shift", hidden=True)
app.command("debias", hidden=True)(debias)
edit_app.command("gender-vector", hidden=True)(gender_vector)
app.command("info")(info)
app.command("generate")(generate_command)
app.command("explain")(explain_command)
app.command("score")(score_command)
app.command("serve-llm")(serve_llm_command)
app.command("app")(app_command)


def run() -> None:
    """Console-script entry: user errors print one line to stderr and exit 2 (130 after Ctrl-C), never a traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        # Without standalone mode, typer turns Ctrl-C into a *returned* 130 (and typer.Exit(n) into n).
        code = app(standalone_mode=False)
    except SaescopeError as exc:
        if str(exc):
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == 130:
            print("interrupted", file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    run()
