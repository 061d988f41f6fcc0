"""The intervention scorer: does turning the feature up make the model write what the explanation says?

For each feature, the subject model continues ``PROMPTS`` greedily twice: as it is, and with the feature
added at ``strength`` times its largest activation in the RUN (``steering.FeatureSteering``, the same
intervention layer as ``saescope steer``). The LLM reads each continuation with the explanation and says
whether the text shows it; ``score`` = balanced accuracy at telling steered from plain texts, ``auc`` from
the Yes/No log-odds. An explanation of what the feature *does* (not just where it fires) scores high.
"""

from __future__ import annotations

import random

from saescope.autointerp.llm.protocol import ChatRequest, LLMClient
from saescope.autointerp.prompts import intervention_request
from saescope.autointerp.scorers import yes_no_scores
from saescope.features.run import FeatureRun
from saescope.model.generation import generate
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.steering.features import FeatureEdit, FeatureSteering

PROMPTS = ("I think that", "The story begins", "Here is a short note:")


def steered_texts(lm: LoadedModel, sae: SAE, run: FeatureRun, features: list[int], strength: float = 2.0,
                  max_new_tokens: int = 16) -> tuple[list[str], dict[int, list[str]]]:
    """``(plain, {feature: steered})`` continuations of ``PROMPTS`` (prompt included), greedy."""
    def texts(intervention: FeatureSteering | None) -> list[str]:
        out = generate(lm, list(PROMPTS), intervention, max_new_tokens=max_new_tokens, temperature=0)
        return [prompt + samples[0] for prompt, samples in zip(PROMPTS, out)]

    maxima = run.stats.set_index("feature")["max"]
    steered = {f: texts(FeatureSteering(sae, [FeatureEdit(f, "add", strength * float(maxima[f]))],
                                        hook=run.manifest["hook"])) for f in features}
    return texts(None), steered


def intervention_scores(lm: LoadedModel, sae: SAE, run: FeatureRun, explanations: dict[int, str], client: LLMClient,
                        strength: float = 2.0, seed: int = 0) -> list[dict]:
    plain, steered = steered_texts(lm, sae, run, list(explanations), strength)

    def items(feature: int, _rng: random.Random) -> tuple[list[ChatRequest], list[int]]:
        asked = [intervention_request(explanations[feature], t) for t in steered[feature] + plain]
        return asked, [1] * len(steered[feature]) + [0] * len(plain)

    return yes_no_scores(explanations, client, items, seed)
