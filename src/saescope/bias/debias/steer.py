"""``steer``: add the gender contrast vector with the coefficient that centres the selection prompts.

The vector is CAA over the training pairs, or the chosen features' decoder directions signed by their
gender effect. The full coefficient brings the mean ``p_she`` of the training occupation prompts to
0.5 (found by bisection); the candidates are fractions of it. It corrects the overall offset, not the
stereotype.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.bias.debias.selection import SelectionScorer
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.steering import Intervention, VectorSteering
from saescope.steering.contrast.pairs import pairs_path, read_pairs
from saescope.steering.contrast.stats import pair_activations

STEER_FRACTIONS = (0.5, 0.75, 1.0)


def female_direction(lm: LoadedModel, sae: SAE, hook: str, table: pd.DataFrame, features: list[int] | None
                     ) -> torch.Tensor:
    """Female-minus-male direction: CAA over the training pairs, or the signed decoder directions of ``features``."""
    if features:
        signs = table.set_index("feature").loc[features, "pair_delta"].apply(lambda d: 1.0 if d >= 0 else -1.0)
        vector = (torch.tensor(signs.to_numpy(), dtype=torch.float32) @ sae.decoder_directions()[features].cpu())
    else:
        pairs = read_pairs(pairs_path("gender_train"))
        vector = pair_activations(lm, sae, hook, pairs).deltas.mean(0)
    return vector / vector.norm()


def centering_coefficient(scorer: SelectionScorer, make: Callable[[float], Intervention],
                          limit: float = 64.0) -> float:
    """Bisection for the coefficient that brings the selection prompts' mean p_she to 0.5."""
    base = scorer.base["mean_p_she"]
    sign = -1.0 if base > 0.5 else 1.0
    low, high = 0.0, limit
    for _ in range(10):
        mid = (low + high) / 2
        mean = scorer.score(make(sign * mid), full=False)["mean_p_she"]
        if (mean - 0.5) * (base - 0.5) > 0:
            low = mid
        else:
            high = mid
    return sign * (low + high) / 2


@register_method("steer")
def steer(ctx: MethodContext) -> list[Candidate]:
    """Fractions (``strengths``, default 0.5, 0.75, 1) of the centering coefficient."""
    chosen = [] if ctx.features == "auto" else list(ctx.features)
    vector = female_direction(ctx.lm, ctx.sae, ctx.hook, ctx.table, chosen or None)
    full = centering_coefficient(ctx.scorer, lambda c: VectorSteering(ctx.hook, vector, c))
    return [(f"coefficient {full * f:.3g}", chosen, VectorSteering(ctx.hook, vector, full * f, name="gender-centering"))
            for f in (ctx.config.strengths or STEER_FRACTIONS)]
