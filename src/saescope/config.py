"""Config dataclasses for long jobs: one docstring per field, read here so the CLI can show it.

A field's docstring is the string literal right under it, as in sparsify's ``TrainConfig``::

    @dataclass
    class ExtractConfig:
        tokens: int = 1_000_000
        \"\"\"Tokens to run over.\"\"\"

The CLI builds its options from the dataclass (``cli.common.config_options``), so defaults live once.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import fields
from functools import cache


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its docstring}`` for a dataclass defined with field docstrings."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or "__dataclass_fields__" not in vars(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    missing = [f.name for f in fields(cls) if f.name not in docs]
    if missing:
        raise TypeError(f"{cls.__name__} fields without a docstring: {missing}")
    return docs
