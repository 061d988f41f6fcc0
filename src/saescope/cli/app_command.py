"""``saescope app``: the local web app over RUNs (feature browser, search, steering playground, reports,
attribution graphs)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from saescope.app.config import AppConfig
from saescope.cli.common import config_options, console


@config_options(AppConfig)
def app_command(
    runs: list[Path] = typer.Argument(..., help="Features RUN folders (saescope features extract)."),
    reports: list[Path] = typer.Option(None, "--reports", help="Folders whose .html reports the app may show."),
    graphs: list[Path] = typer.Option(None, "--graphs", help="Attribution-graph folders (saescope graph attribute) "
                                                             "to explore and intervene on."),
    token: str = typer.Option(None, help="Require this token (default: $SAESCOPE_APP_TOKEN; needed off loopback)."),
    config: AppConfig = None,
) -> None:
    """Browse features, search, steer and read reports in a browser (FastAPI, 127.0.0.1 by default).

    Example: saescope app runs/default --reports demo-debias   (then open http://127.0.0.1:8000)
    """
    from saescope.app.server import serve

    console.print(f"serving {', '.join(str(r) for r in runs)} at http://{config.host}:{config.port}")
    serve(list(runs), list(reports or []), config, token or os.environ.get("SAESCOPE_APP_TOKEN") or None,
          list(graphs or []))
