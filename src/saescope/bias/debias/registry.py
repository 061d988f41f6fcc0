"""The debias methods, by name: each one turns a ``MethodContext`` into candidate interventions.

A method is a function registered under a name (the shape of ``steering.base.register_intervention``)::

    from saescope.bias.debias import MethodContext, register_method

    @register_method("mine")
    def mine(ctx: MethodContext) -> list[Candidate]:
        return [("all features", ids, FeatureSteering(ctx.sae, [...], ctx.hook))]

    plan_debias(lm, sae, "mine")   # then scored and chosen like the built-in ones

The built-in methods live one per module (``features``: ablate and cap, ``erase``, ``leace``, ``dama``,
``vector_erase``: gender-vector, ``scrub``, ``steer``, ``circuit``, ``graph``, ``cda``, ``prompt``) and are imported only
when used, so this module (and ``DebiasConfig``) stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from saescope.errors import SaescopeError

if TYPE_CHECKING:
    import pandas as pd

    from saescope.bias.data import SelectionPrompts
    from saescope.bias.debias.config import DebiasConfig
    from saescope.bias.debias.selection import SelectionScorer
    from saescope.model.loading import LoadedModel
    from saescope.sae.core import SAE
    from saescope.steering.base import Intervention

Candidate = tuple[str, list[int], "Intervention"]  # (label, features used, intervention)
DebiasMethod = Callable[["MethodContext"], list[Candidate]]

BUILTIN = {"ablate": "features", "auto": "auto", "cap": "features", "cda": "cda", "circuit": "circuit", "dama": "dama",
           "erase": "erase", "gender-vector": "vector_erase", "graph": "graph", "leace": "leace", "prompt": "prompt",
           "scrub": "scrub", "steer": "steer"}
LEGACY_NAMES = {"clamp": "cap", "project": "erase"}  # what earlier versions called two methods
_METHODS: dict[str, DebiasMethod] = {}


@dataclass
class MethodContext:
    """What a method may use: the model and SAE, the gender-feature table ranked on the selection
    prompts, the explicit feature ids (``"auto"``: the method chooses), and the scorer."""

    lm: LoadedModel
    sae: SAE
    hook: str
    config: DebiasConfig
    table: pd.DataFrame
    selection: SelectionPrompts
    scorer: SelectionScorer
    features: str | list[int]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per method, filled by methods that run others


def register_method(name: str) -> Callable[[DebiasMethod], DebiasMethod]:
    """Function decorator: ``DebiasConfig(method=name)`` and ``--method name`` use this method."""
    def register(method: DebiasMethod) -> DebiasMethod:
        _METHODS[name] = method
        return method
    return register


def method_names() -> list[str]:
    """Every method name: the built-in ones and those registered since."""
    return sorted({*BUILTIN, *_METHODS})


def debias_method(name: str) -> DebiasMethod:
    """The method registered under ``name`` (a built-in one is imported on first use)."""
    if name not in _METHODS and name in BUILTIN:
        importlib.import_module(f"saescope.bias.debias.{BUILTIN[name]}")
    if name not in _METHODS:
        raise SaescopeError(f"unknown debias method {name!r}: use one of {', '.join(method_names())}")
    return _METHODS[name]


