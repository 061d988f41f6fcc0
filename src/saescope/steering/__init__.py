"""Interventions on the model (feature edits, vectors, erasure, IBM alignment steering), sweeps,
and contrastive steering from prompt pairs (``steering.contrast``).

Importing this package registers every saved intervention type."""

from saescope.steering.base import Intervention, Interventions, load_intervention
from saescope.steering.erasure import FeatureGate, SubspaceErasure
from saescope.steering.features import FeatureEdit, FeatureSteering
from saescope.steering.ibm import AlignmentScores, AlignmentSteering, score_features
from saescope.steering.vectors import VectorSteering

__all__ = ["AlignmentScores", "AlignmentSteering", "FeatureEdit", "FeatureGate", "FeatureSteering", "Intervention",
           "Interventions", "SubspaceErasure", "VectorSteering", "load_intervention", "score_features"]
