"""saescope: find the SAE features behind a language model's behaviour, explain them, act on them.

Python API (the CLI ``saescope`` mirrors it)::

    import saescope
    lm = saescope.load_model()                    # embedded SmolLM2-135M-Instruct
    sae = saescope.load_sae("default")            # bundled TopK SAE at blocks.12.hook_resid_post
    metrics = saescope.evaluate_sae(lm, sae, tokens=20_000)
    run = saescope.extract_features(lm, sae, "runs/default", tokens=200_000)
    run.stats.sort_values("max").tail(); run.examples(123)
    with saescope.intervene(lm.model, {"blocks.12.hook_resid_post": lambda acts: sae(acts)}):
        logits = lm.model(**lm.tokenize(["Hello"])).logits

Names are imported lazily: ``import saescope`` loads nothing heavy (no torch, numba, pandas, scipy)
until one of them is used. The layers and what lives where: docs/architecture.md.
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr
from saescope.version import __version__ as __version__

_MODULES = {
    "saescope.errors": ["SaescopeError"],
    "saescope.model.loading": ["LoadedModel", "load_model"],
    "saescope.model.hooks": ["HookPoint", "capture", "forward_until", "intervene", "resolve_hook"],
    "saescope.model.generation": ["generate"],
    "saescope.sae.core": ["SAE", "SAEConfig"],
    "saescope.sae.formats": ["load_sae", "save_sae"],
    "saescope.sae.train_config": ["TrainConfig"],
    "saescope.sae.training": ["train_sae"],
    "saescope.sae.suite": ["SuiteConfig", "load_suite", "train_suite"],
    "saescope.circuits.find": ["find_circuit"],
    "saescope.circuits.graph": ["Circuit"],
    "saescope.circuits.config": ["CircuitConfig"],
    "saescope.sae.evaluation": ["SAEEvaluation", "evaluate_sae"],
    "saescope.sae.bench.run": ["bench_sae"],
    "saescope.sae.bench.synthetic": ["synthetic_recovery"],
    "saescope.sae.text": ["encode_text", "top_features_of_text"],
    "saescope.features.config": ["ExtractConfig"],
    "saescope.features.extract": ["extract_features"],
    "saescope.features.run": ["FeatureRun"],
    "saescope.steering": ["AlignmentScores", "AlignmentSteering", "FeatureEdit", "FeatureGate", "FeatureSteering",
                          "Intervention", "Interventions", "SubspaceErasure", "VectorSteering", "load_intervention",
                          "score_features"],
    "saescope.steering.contrast.pairs": ["ContrastPair", "read_pairs"],
    "saescope.steering.contrast.config": ["ContrastFitConfig"],
    "saescope.steering.contrast.fit": ["fit_contrast"],
    "saescope.steering.contrast.evaluate": ["evaluate_contrast"],
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
_SUBPACKAGES = ("activations", "bias", "circuits", "model", "sae", "features", "steering", "reports")

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES, "__version__"])


__getattr__ = lazy_getattr("saescope", {**_EXPORTS, **{name: f"saescope.{name}" for name in _SUBPACKAGES}})


def __dir__() -> list[str]:
    return __all__
