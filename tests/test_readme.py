"""The README is the front door: short, and every command in it runs as written.

Every ``saescope`` line of its bash blocks is parsed by the real CLI (sub-commands and options exist,
required options are given); a listed subset runs for real; the Python tour runs as written."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import typer

from helpers import saescope

README = Path(__file__).resolve().parents[1] / "README.md"
RUN_FOR_REAL = ("saescope info --json", "saescope sae top --text")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[str]:
    """Every ``saescope ...`` command of the bash blocks, continuation lines joined, comments cut."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip().rstrip("&").strip()
            if line.startswith("saescope "):
                commands.append(line)
    return commands


def _parse(args: list[str]) -> None:
    """Resolve the sub-command and parse its options as the CLI would, without running it."""
    from saescope.cli.main import app

    command = typer.main.get_command(app)  # typer's own click: its classes, not the click package's
    while hasattr(command, "list_commands") and args and not args[0].startswith("-"):  # a group's own options end it
        name, args = args[0], args[1:]
        sub = command.get_command(type(click_context(command))(command), name)
        assert sub is not None, f"no command {name!r}"
        command = sub
    command.make_context(command.name, args)


def click_context(command):
    """A context of the click that built ``command``."""
    return command.make_context(command.name, ["--help"], resilient_parsing=True)


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def test_every_readme_command_parses():
    commands = readme_commands()
    assert len(commands) >= 15
    for line in commands:
        try:
            _parse(shlex.split(line)[1:])
        except Exception as exc:  # noqa: BLE001 - typer's click raises its own UsageError / NoSuchOption
            pytest.fail(f"README: {line!r}: {exc}")


def test_a_readme_command_with_a_typo_would_fail():
    with pytest.raises(Exception, match="No such option: --layer"):
        _parse(["bias", "debias", "--layer", "12", "--out", "x"])
    with pytest.raises(Exception, match="Missing parameter: out"):
        _parse(["bias", "debias", "--layers", "12"])
    with pytest.raises(AssertionError, match="no command 'debias2'"):
        _parse(["bias", "debias2"])


@pytest.mark.parametrize("prefix", RUN_FOR_REAL)
def test_readme_commands_run(prefix, lm):
    line = next(c for c in readme_commands() if c.startswith(prefix))
    result = saescope(*shlex.split(line)[1:])
    assert result.returncode == 0, result.stderr


def test_the_python_tour_runs_as_written(lm, tmp_path, monkeypatch):
    (code,) = _blocks("python")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["feats"].shape == (1, namespace["sae"].d_sae) and os.path.exists("steer.json")
    assert namespace["same"].to_dict() == namespace["steer"].to_dict()
