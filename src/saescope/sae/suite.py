"""A suite of SAEs at several hook points of one model (``saescope sae train-suite``), e.g. for circuits.

Training shares the expensive part: one forward pass over the corpus caches every hook point's
activations (``activations.cache``), then each SAE trains on its own cache for ``epochs`` passes and
is evaluated on held-out text. The suite folder holds one SAELens-format folder per hook point
(named after the hook) and ``suite.json`` (hooks, settings, each SAE's evaluation). Every step is
resumable: a finished SAE is skipped, an interrupted one continues from its checkpoint.

``load_suite("default")`` is the suite shipped for the embedded model: the bundled SAE at layer 12
plus the SAEs in ``data/sae/suite`` (bfloat16 weights to keep the package small).

Example::

    suite = train_suite(SuiteConfig(layers=[2, 6], features=1024, k=32, tokens=200_000), "my_suite")
    saes = load_suite("my_suite")          # {"blocks.2.hook_resid_post": SAE, ...}
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel, load_model
from saescope.sae.core import SAE
from saescope.sae.suite_config import SHIPPED_LAYERS, SuiteConfig
from saescope.storage import read_json, write_json

__all__ = ["SHIPPED_LAYERS", "SuiteConfig", "load_suite", "train_suite"]
SUITE_FILE = "suite.json"


def train_suite(config: SuiteConfig, out: str | Path, resume: bool = True, lm: LoadedModel | None = None,
                progress: bool = True) -> dict[str, SAE]:
    """Train (or finish training) every SAE of the suite into ``out``; returns ``{hook: SAE}``."""
    from saescope.activations.cache import cache_activations
    from saescope.sae.evaluation import evaluate_sae
    from saescope.sae.formats import CFG_FILE, load_sae, save_sae
    from saescope.sae.training import train_sae

    out = Path(out)
    previous = out / SUITE_FILE
    if previous.exists() and read_json(previous, "suite index").get("config", {}) != asdict(config):
        raise SaescopeError(f"{out} holds a suite trained with other settings: use another out folder (--out)")
    lm = lm or load_model(config.model, device=config.device, dtype=config.dtype)
    pending = [hook for hook in config.hooks if not (out / hook / CFG_FILE).exists()]
    cache = out / "activations"
    if pending:
        write_json(previous, {"config": asdict(config), "hooks": config.hooks, "evaluations": {}})
        cache_activations(lm, _cached_hooks(cache, pending), config.tokens, cache, seed=config.seed, progress=progress)
    evaluations = {}
    for hook in config.hooks:
        folder = out / hook
        if not (folder / CFG_FILE).exists():
            if folder.exists() and not (folder / "checkpoint").exists():
                shutil.rmtree(folder)  # the suite's own SAE folder, stopped before its first checkpoint: start it over
            sae = train_sae(config.train_config(hook, str(cache / hook)), folder, resume=(folder / "checkpoint").exists(),
                            lm=lm, progress=progress)
            if config.save_dtype == "bfloat16":
                save_sae(sae, folder, dtype=torch.bfloat16)
        sae = load_sae(folder, device=config.device)
        if config.eval_tokens and not (folder / "eval.json").exists():
            result = evaluate_sae(lm, sae, hook, tokens=config.eval_tokens, progress=progress).to_dict()
            write_json(folder / "eval.json", result)
        evaluations[hook] = read_json(folder / "eval.json", "SAE evaluation") if (folder / "eval.json").exists() else {}
    write_json(previous, {"config": asdict(config), "hooks": config.hooks, "evaluations": evaluations})
    if not config.keep_activations:
        shutil.rmtree(out / "activations", ignore_errors=True)
    return load_suite(out, device=config.device)


def _cached_hooks(cache: Path, pending: list[str]) -> list[str]:
    """The hooks to cache: those of an existing cache when it covers every pending one (a resumed suite), else ``pending``."""
    from saescope.activations.layout import PROGRESS_FILE

    if (cache / PROGRESS_FILE).exists():
        cached = read_json(cache / PROGRESS_FILE, "activation-cache progress").get("hooks", [])
        if set(pending) <= set(cached):
            return list(cached)
    return pending


def load_suite(path: str | Path = "default", device: str = "cpu") -> dict[str, SAE]:
    """``{hook name: SAE}`` of a suite folder (``suite.json``), ordered by depth; ``"default"`` is the
    shipped suite of the embedded model."""
    from saescope.sae.formats import load_sae

    if str(path) == "default":
        return {f"blocks.{layer}.hook_resid_post": load_sae(f"default/blocks.{layer}.hook_resid_post", device=device)
                for layer in SHIPPED_LAYERS}
    folder = Path(path).expanduser()
    index = folder / SUITE_FILE
    if not index.exists():
        raise SaescopeError(f"{folder} is not an SAE suite: it has no {SUITE_FILE} (train one with saescope sae "
                            "train-suite)")
    hooks = read_json(index, "suite index").get("hooks")
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        raise SaescopeError(f"{index}: field 'hooks' must be a list of hook names (fix the file)")
    return {hook: load_sae(folder / hook, device=device) for hook in hooks}

