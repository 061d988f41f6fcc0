"""What every command shares: the rich console, JSON output, option parsers, options built from a
job's config dataclass, and loading model + SAE from options. No logic of the library lives here."""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from saescope.config import field_docs
from saescope.errors import SaescopeError
from saescope.storage import json_ready

console = Console(stderr=False, highlight=False)
SAE_HELP = ("'default' (the bundled layer-12 SAE), default/blocks.L.hook_resid_post (the suite), an SAE folder, "
            "a sae-lens RELEASE/SAE_ID or hf:OWNER/REPO/FOLDER.")
DTYPE_HELP = "auto (bfloat16 only where it is faster; see `saescope info`) | float32 | bfloat16 | float16."
MEASURE_DTYPE_HELP = ("auto (float32: scores are measured in float32 on every device) | float32 | bfloat16 | float16. "
                      "The precision is recorded in the JSON output.")
# The options every model-running command shares, declared once.
DEVICE_OPTION = typer.Option("cpu", help="cpu | cuda | cuda:N | mps.")
DTYPE_OPTION = typer.Option("auto", help=DTYPE_HELP)
MEASURE_DTYPE_OPTION = typer.Option("auto", help=MEASURE_DTYPE_HELP)
MODEL_OPTION = typer.Option(None, help="Hub id or local folder; default: the embedded model.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object.")


def print_json(obj: Any) -> None:
    """Print ``obj`` as one JSON document on stdout (numpy values become Python ones, NaN/inf null)."""
    sys.stdout.write(json.dumps(json_ready(obj), indent=2) + "\n")


def parse_floats(text: str, what: str) -> list[float]:
    """``"1,2.5"`` -> ``[1.0, 2.5]``; a ``SaescopeError`` naming ``what`` otherwise."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SaescopeError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_ids(text: str | None, what: str) -> list[int] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SaescopeError(f"{what} must be comma-separated integers, got {text!r}") from None


_DEFAULT = object()  # a list option left empty: the config's own default applies


def _list_element(hint: Any) -> type | None:
    """The element type of a config field that holds a list (``list[int]``, ``list[int] | None``, ``str | list[int]``)."""
    for arg in (hint, *typing.get_args(hint)):
        if typing.get_origin(arg) is list:
            return typing.get_args(arg)[0]
    return None


def _parse_list(text: str | None, element: type, hint: Any, flag: str) -> Any:
    """``"12,14"`` -> ``[12, 14]`` for a list field; a word such as ``auto`` stays a word when the field
    also takes a string; ``None`` leaves the config's default."""
    if text is None:
        return _DEFAULT
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [element(part) for part in parts]
    except ValueError:
        if str in typing.get_args(hint) and len(parts) == 1:
            return parts[0]
        raise SaescopeError(f"{flag} must be comma-separated {element.__name__} values, got {text!r}") from None


def config_options(config_cls: type, flags: dict[str, str] | None = None, exclude: tuple[str, ...] = (),
                   param: str = "config") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one option per field of ``config_cls`` (default and help from the dataclass and
    its field docstrings); the command receives ``<param>=config_cls(...)``. ``flags`` renames options.
    Stack it to give a command several configs (each with its own ``param``)."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != param]
        taken = {p.name for p in own}
        hints, docs = typing.get_type_hints(config_cls), field_docs(config_cls)
        chosen = [f for f in fields(config_cls) if f.name not in taken and f.name not in exclude]
        options, lists = [], {f.name: element for f in chosen if (element := _list_element(hints[f.name]))}
        for f in chosen:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            names = [flags[f.name]] if flags and f.name in flags else []
            annotation = hints[f.name]
            if f.name in lists:  # a list field is one comma-separated option, parsed below
                annotation, docs = str | None, {**docs, f.name: docs[f.name] + " Comma-separated."}
                default = ",".join(map(str, default)) or None if isinstance(default, list) else default
            options.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                             default=typer.Option(default, *names, help=docs[f.name].replace("``", ""))))

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f in chosen}
            for name, element in lists.items():
                flag = flags[name] if flags and name in flags else "--" + name.replace("_", "-")
                values[name] = _parse_list(values[name], element, hints[name], flag)
            values = {name: value for name, value in values.items() if value is not _DEFAULT}
            return command(**{param: config_cls(**values)}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *options])  # type: ignore[attr-defined]
        return wrapper
    return decorate


def load_model_and_sae(sae_path: str, model: str | None, hook: str | None, device: str, dtype: str | None = "auto",
                       purpose: str = "bulk"):
    """Load the SAE, then the model it was trained on (unless ``model`` says otherwise), and check they fit.
    ``purpose`` says what ``dtype="auto"`` means (``saescope.precision``: "bulk" or "measure").

    Returns ``(lm, sae, hook_name)``.
    """
    from saescope.model.loading import EMBEDDED_MODEL, load_model
    from saescope.sae.formats import load_sae

    sae = load_sae(sae_path, device=device)
    if (hook or sae.cfg.hook_name) is None:
        raise SaescopeError(f"the SAE at {sae_path!r} does not name its hook point: pass --hook")
    model_name = model or (None if sae.cfg.model_name in (None, EMBEDDED_MODEL) else sae.cfg.model_name)
    lm = load_model(model_name, device=device, dtype=dtype, purpose=purpose)
    return lm, sae, lm.check_sae(sae, hook)


def check_folder(out: Path) -> None:
    """A one-line error when ``--out`` names a file (it must name a folder)."""
    if out.exists() and not out.is_dir():
        raise SaescopeError(f"{out} is a file: --out must name a folder")
