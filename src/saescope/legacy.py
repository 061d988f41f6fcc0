"""The flat module paths of saescope 0.1 (``saescope.models``, ``saescope.interventions``, ...) keep
working for one release: importing one gives a module holding the names of the module(s) that
replaced it (the new modules themselves are left untouched). Remove this file in the next release."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

MOVED = {
    "models": ["model.loading"], "hooks": ["model.hooks"], "generation": ["model.generation"],
    "decode_layout": ["model.fast_decode"], "lm_metrics": ["model.likelihood"],
    "activations": ["model.activations", "sae.stream"], "sae_io": ["sae.formats"],
    "sae_objectives": ["sae.objectives"], "training": ["sae.training", "sae.train_config"],
    "evaluation": ["sae.evaluation"], "inspect": ["sae.text"], "extraction": ["features.extract"],
    "feature_stats": ["features.accumulator"], "feature_kernels": ["features.kernels"],
    "feature_run": ["features.run", "sae.core"], "feature_search": ["features.search"],
    "logit_effects": ["features.logit_effects"], "dashboard": ["features.dashboard"],
    "interventions": ["steering.base", "steering.features", "steering.vectors", "steering.erasure", "steering.ibm",
                      "model.hooks"],
    "alignment": ["steering.ibm", "embeddings", "corpus"], "steering_sweep": ["steering.sweep"],
    "contrast": ["steering.contrast.pairs", "steering.contrast.stats"],
    "contrast_fit": ["steering.contrast.fit"], "contrast_eval": ["steering.contrast.evaluate"],
    "cli.steer_commands": ["cli.steering_commands"],
}


class _LegacyLoader(importlib.abc.Loader):
    def __init__(self, targets: list[str]) -> None:
        self.targets = targets

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        parts = [importlib.import_module(f"saescope.{t}") for t in self.targets]
        module = types.ModuleType(spec.name, f"Deprecated: now in {', '.join('saescope.' + t for t in self.targets)}.")
        for part in parts:
            module.__dict__.update({k: v for k, v in vars(part).items() if not k.startswith("__")})
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class LegacyFinder(importlib.abc.MetaPathFinder):
    """Resolves ``saescope.<old name>`` to its new home (see ``MOVED``)."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix("saescope.")
        if not fullname.startswith("saescope.") or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _LegacyLoader(MOVED[old]))


def install() -> None:
    if not any(isinstance(f, LegacyFinder) for f in sys.meta_path):
        sys.meta_path.append(LegacyFinder())
