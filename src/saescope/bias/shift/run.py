"""``run_shift``: every SHIFT condition and baseline of ``bias.shift`` over several seeds, in one result
(``saescope bias shift run``, ``benchmarks/bench_circuits.py``).

Example::

    result = run_shift(lm, load_suite("default"), ShiftConfig())
    result.summary["shift"]["gender_acc"], result.summary["oracle"]["profession_acc"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saescope.bias.shift.core import (
    ShiftConfig,
    fit_probe,
    pooled,
    probe_as_readout,
    scores,
    without_gendered_tokens,
)
from saescope.bias.shift.data import check_split, read_bios
from saescope.bias.shift.selection import gender_candidates
from saescope.circuits.attribution import mean_feature_effects
from saescope.errors import SaescopeError
from saescope.model.hooks import execution_order, resolve_hook
from saescope.model.loading import LoadedModel
from saescope.precision import MEASURE, precision_record
from saescope.sae.core import SAE
from saescope.steering.features import feature_ablation

CONDITIONS = ("original", "shift", "random", "oracle", "token_deletion", "embedding_level", "concept_bottleneck")


@dataclass
class ShiftResult:
    """Per condition: the scores of every seed, and their mean and standard deviation (``summary``)."""

    runs: dict[str, list[dict[str, float]]]
    ablated: dict[str, list[int]]
    candidates: dict[str, list[int]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, runs in self.runs.items():
            out[name] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            out[name] |= {f"{k}_std": float(np.std([r[k] for r in runs])) for k in runs[0]}
        return out


def run_shift(lm: LoadedModel, saes: Mapping[str, SAE], config: ShiftConfig, progress: bool = True) -> ShiftResult:
    """Run SHIFT and its baselines on the configured biographies (the shipped splits by default; see ``bias.shift``)."""
    readout = f"blocks.{config.readout_layer}.hook_resid_post"
    point = resolve_hook(lm.model, readout)
    used = {h: s for h, s in saes.items() if execution_order(resolve_hook(lm.model, h)) <= execution_order(point)}
    if not used:
        raise SaescopeError(f"no SAE at or below {readout}: choose a later readout_layer (--readout-layer)")
    manual = _manual(config.features, used) if config.features else None
    if config.readout_input == "reconstruction" and readout not in used:
        raise SaescopeError(f"readout_input reconstruction needs an SAE at {readout}: choose a readout layer of the "
                            "suite or --readout-input residual")
    view = used[readout] if config.readout_input == "reconstruction" else None
    train, oracle, test = (read_bios(name)[:config.limit] for name in (config.train, config.oracle_train, config.test))
    for rows, name, balanced in ((train, "training", False), (oracle, "oracle training", True), (test, "test", True)):
        check_split(rows, name, balanced)
    if len(oracle) != len(train):
        raise SaescopeError(f"the oracle training split has {len(oracle)} biographies and the training split {len(train)}: "
                            "they must be the same size (the probes are fit on the same resampled rows)")
    texts = lambda rows: [r["text"] for r in rows]
    labels = lambda rows: np.array([r["profession"] for r in rows])
    splits = {"train": train, "oracle": oracle, "test": test}
    base = {name: pooled(lm, texts(rows), readout, transform=view).numpy() for name, rows in splits.items()}
    probe = fit_probe(base["train"], labels(train), c=config.probe_c)
    effects = mean_feature_effects(lm, used, texts(train[:config.attribution_bios]), probe_as_readout(probe, readout, view))
    candidates = _top(effects, config.top)
    chosen = manual if manual is not None else gender_candidates(
        lm, used, candidates, train[:config.attribution_bios], config.selection, config.swap_threshold, progress)
    lowest = next(iter(used))
    views = {"shift": _ablated(lm, used, chosen, readout, train, test, view),
             "embedding_level": _ablated(lm, used, {lowest: chosen.get(lowest, [])}, readout, train, test, view),
             "token_deletion": tuple(pooled(lm, [without_gendered_tokens(t) for t in texts(rows)], readout,
                                            transform=view).numpy() for rows in (train, test)),
             "concept_bottleneck": _bottleneck(lm, used, effects, chosen, readout, train, test)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONDITIONS}
    for seed in tqdm(range(config.seeds), desc="SHIFT seeds", disable=not progress):
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(train), size=int(0.8 * len(train)), replace=False)
        runs["original"].append(_fit_score(base["train"], base["test"], train, test, idx, seed, config.probe_c))
        runs["oracle"].append(_fit_score(base["oracle"], base["test"], oracle, test, idx, seed, config.probe_c))
        for name, (x_train, x_test) in views.items():
            runs[name].append(_fit_score(x_train, x_test, train, test, idx, seed, config.probe_c))
        random_choice = {h: rng.choice(used[h].d_sae, size=len(f), replace=False).tolist() for h, f in chosen.items()}
        x_train, x_test = _ablated(lm, used, random_choice, readout, train, test, view)
        runs["random"].append(_fit_score(x_train, x_test, train, test, idx, seed, config.probe_c))
    settings = {"readout": readout, "hooks": list(used), "top": config.top, "seeds": config.seeds,
                "n_ablated": sum(len(f) for f in chosen.values()), "selection": "manual" if config.features else config.selection,
                "swap_threshold": config.swap_threshold, "probe_c": config.probe_c,
                "readout_input": config.readout_input, "data": [config.train, config.oracle_train, config.test],
                "precision": precision_record(lm.dtype, MEASURE)}
    return ShiftResult(runs, chosen, candidates, settings)


def _fit_score(x_train, x_test, train_rows, test_rows, idx, seed, c) -> dict[str, float]:
    labels = np.array([r["profession"] for r in train_rows])
    if len(set(labels[idx].tolist())) < 2:
        raise SaescopeError(f"the 80 % resample (seed {seed}) of the {len(train_rows)} training biographies has one "
                            "profession only: use more biographies (a larger --limit)")
    probe = fit_probe(x_train[idx], labels[idx], seed, c)
    return scores(probe, x_test, test_rows)


def _top(effects: Mapping[str, torch.Tensor], n: int) -> dict[str, list[int]]:
    flat = [(abs(float(v)), hook, i) for hook, values in effects.items() for i, v in enumerate(values.tolist()) if v]
    out: dict[str, list[int]] = {hook: [] for hook in effects}
    for _, hook, index in sorted(flat, reverse=True)[:n]:
        out[hook].append(index)
    return out


def _manual(specs: list[str], saes) -> dict[str, list[int]]:
    chosen: dict[str, list[int]] = {}
    for spec in specs:
        layer, sep, feature = spec.partition(":")
        hook = f"blocks.{layer.strip()}.hook_resid_post"
        if not sep or hook not in saes or not feature.strip().isdigit():
            raise SaescopeError(f"features (--features) entries must be LAYER:ID with a layer of the suite, got {spec!r}")
        chosen.setdefault(hook, []).append(saes[hook].check_feature(int(feature)))
    return chosen


def _ablated(lm, saes, chosen, readout, train, test, view=None) -> tuple[np.ndarray, np.ndarray]:
    intervention = feature_ablation(saes, chosen)
    return tuple(pooled(lm, [r["text"] for r in rows], readout, intervention, transform=view).numpy()
                 for rows in (train, test))


def _bottleneck(lm, saes, effects, chosen, readout, train, test, size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Pooled activations of the ``size`` features of the readout layer's SAE with the largest |effect| on the
    probe that are not among the ablated gender features (a concept-bottleneck probe's inputs)."""
    hook = readout if readout in saes else list(saes)[-1]
    skip = set(chosen.get(hook, []))
    order = torch.argsort(effects[hook].abs(), descending=True).tolist()
    index = torch.tensor([f for f in order if f not in skip][:size], dtype=torch.long)
    encode = lambda acts: saes[hook].encode(acts)[..., index]
    return tuple(pooled(lm, [r["text"] for r in rows], hook, transform=encode).numpy() for rows in (train, test))
