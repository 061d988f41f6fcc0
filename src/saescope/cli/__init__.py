"""The ``saescope`` command line: one typer app, one sub-app per area."""
