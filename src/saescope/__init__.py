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
"""

from saescope import bias
from saescope.alignment import AlignmentScores, score_features
from saescope.contrast import ContrastPair, read_pairs
from saescope.contrast_eval import evaluate_contrast
from saescope.contrast_fit import fit_contrast
from saescope.errors import SaescopeError
from saescope.evaluation import SAEEvaluation, evaluate_sae
from saescope.extraction import extract_features
from saescope.feature_run import FeatureRun
from saescope.hooks import HookPoint, capture, forward_until, intervene, resolve_hook
from saescope.generation import generate
from saescope.inspect import encode_text, top_features_of_text
from saescope.interventions import (AlignmentSteering, FeatureEdit, FeatureSteering, Intervention, Interventions,
                                    SubspaceErasure, VectorSteering, load_intervention)
from saescope.models import LoadedModel, load_model
from saescope.sae import SAE, SAEConfig
from saescope.sae_io import load_sae, save_sae
from saescope.training import TrainConfig, train_sae

__version__ = "0.1.0"

__all__ = [
    "SAE", "AlignmentScores", "AlignmentSteering", "ContrastPair", "FeatureEdit", "FeatureRun", "FeatureSteering",
    "HookPoint", "Intervention", "Interventions", "LoadedModel", "SAEConfig", "SAEEvaluation", "SaescopeError", "SubspaceErasure",
    "TrainConfig", "VectorSteering", "capture", "encode_text", "evaluate_contrast", "evaluate_sae", "extract_features",
    "fit_contrast", "forward_until", "generate", "intervene", "load_intervention", "load_model", "load_sae",
    "bias", "read_pairs", "resolve_hook", "save_sae", "score_features", "top_features_of_text", "train_sae",
]
