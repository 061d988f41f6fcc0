"""``auto``: every method's candidates on one table, one winner by one stated rule, on training data only.

Each method in ``config.methods`` (default: ``AUTO_METHODS``, every built-in one but ``circuit``, which
needs the SAE suite and several minutes, and ``graph``, which needs a trained transcoder set; add them with
``methods=[..., "circuit"]``; ``cda`` is the
classic fine-tuning baseline, about a minute; ``prompt`` the instruction baseline) builds its
candidates from the same ranked gender features; every candidate is then scored like any other on the
selection prompts and training text (``plan_debias``): the winner removes the most occupation bias
(``dev_reduction``) among those that keep definitional accuracy >= 95 % of the original and CE within
+2 %. The selection table (``selection.csv``) is the Pareto table: each row's method, its bias cut
against its CE and definitional cost, whether it is on the Pareto front (no other candidate cuts more
bias at no more CE increase and no less definitional accuracy), and the seconds its method took to
build its candidates.
"""

from __future__ import annotations

import time
from dataclasses import replace

from tqdm.auto import tqdm

from saescope.bias.debias.registry import Candidate, MethodContext, debias_method, register_method
from saescope.errors import SaescopeError

AUTO_METHODS = ("scrub", "erase", "leace", "dama", "gender-vector", "ablate", "cap", "steer", "cda", "prompt")


@register_method("auto")
def auto(ctx: MethodContext) -> list[Candidate]:
    """The candidates of every method in ``config.methods``, labelled ``"method: candidate"``."""
    methods = ctx.config.methods or list(AUTO_METHODS)
    if "auto" in methods:
        raise SaescopeError("auto cannot compare itself: list other methods")
    out: list[Candidate] = []
    for name in tqdm(methods, desc="debias methods", unit="method"):
        start = time.perf_counter()
        # each method sees its own defaults: explicit features are feature ids for ablate/cap/steer but
        # gate features for erase/leace, so auto leaves the choice to each method
        built = debias_method(name)(replace(ctx, features="auto", config=replace(ctx.config, method=name)))
        ctx.timings[name] = time.perf_counter() - start
        out += [(f"{name}: {label}", used, intervention) for label, used, intervention in built]
    return out
