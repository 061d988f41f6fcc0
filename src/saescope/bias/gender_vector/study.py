"""``saescope bias gender-vector``: the gender vector found in ROME's edit deltas, end to end.

1. Names: ``config.names`` female and male first names the model genders correctly
   (``editing.names``), split by name into discovery and held-out halves.
2. Layer: ``config.layer``, or the peak of the MLP causal trace averaged over four discovery names.
3. Discovery: every discovery name is flipped with ROME (female → " Male", male → " Female"); each
   edit's value change Δ is kept (``deltas.safetensors``, written after every batch: an interrupted
   run continues where it stopped when run again on the same folder).
4. A logistic classifier on Δ (70/30) and the box-constrained vector built from it
   (``editing.gender_vector``), scaled to the smallest norm that flips 90 % of discovery names both
   ways (``vector_norm``), plus other f→m directions at the same norm (the mean Δ of f→m edits
   minus that of m→f edits; the CAA vector and the signed SAE definitional-gender features of the
   bias module, at the SAE's hook; a random direction as a control).
5. The flip test of every direction on the held-out names, with CE/KL and other names' genders.
6. Same-seed generations and the bias module's occupation bias and definitional accuracy with and
   without one held-out edit; ``report.html``.

This lives in ``bias`` (not ``editing``) because it reads the bias module's gender directions and
side-effect metrics; the parts any study can use are in ``editing``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.bias.gender_vector.config import GenderVectorConfig
from saescope.bias.gender_vector.names import ANSWERS, OTHER, PROMPT, gendered_names, split_names
from saescope.bias.gender_vector.vector import box_vector, choose_scale, delta_classifier, flip_test, name_updates
from saescope.editing.config import RomeConfig
from saescope.editing.request import EditRequest, fill_subject
from saescope.editing.rome import rome_edits
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.precision import MEASURE, precision_record
from saescope.storage import atomic_path, write_json


def run_gender_vector_study(lm: LoadedModel, out: str | Path, config: GenderVectorConfig | None = None,
              progress: bool = True) -> dict:
    """Run the study into ``out`` (see the module docstring); returns the summary (also ``summary.json``)."""
    config = config or GenderVectorConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SaescopeError(f"{out} is a file: out (--out) must name a folder")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    names = split_names(gendered_names(lm, config.names), seed=config.seed)
    names.to_csv(out / "names.csv", index=False)
    discovery = names[names.split == "discovery"].reset_index(drop=True)
    layer = config.layer if config.layer is not None else traced_layer(lm, discovery)
    deltas, found = discovery_deltas(lm, discovery, config.rome(layer), out, config.batch, progress)
    female_to_male = (discovery.gender == "female").to_numpy()
    classifier = delta_classifier(deltas, female_to_male, config.seed)
    norm, scales = vector_norm(lm, discovery, deltas, female_to_male, classifier.weight, config.rome(layer))
    directions = study_directions(lm, deltas, female_to_male, classifier.weight, norm, config.seed)
    heldout = _heldout(names, config.heldout_limit)
    updates = name_updates(lm, list(heldout.name), list(heldout.gender), layer, config.rome(layer), progress)
    flips = flip_test(lm, updates, list(heldout.gender), directions, config.ce_edits, config.ce_tokens,
                      progress=progress)
    flips.to_csv(out / "directions.csv", index=False)
    headline = [u for u, g in zip(updates, heldout.gender) if g == "female"][0].edit(directions["box_scaled"])
    from saescope.bias.gender_vector.side_effects import bias_side_effects, generations

    shown = generations(lm, [u for u, g in zip(updates, heldout.gender) if g == "female"][:config.generations],
                        directions["box_scaled"], config.seed)
    side = bias_side_effects(lm, headline) if config.bias_side_effects else {}
    box = flips.set_index("direction").loc["box_scaled"]
    summary = {"model": lm.name, "precision": precision_record(lm.dtype, MEASURE), "layer": layer,
               "names_per_gender": config.names,
               "discovery": len(discovery), "heldout": len(heldout), "classifier_acc": classifier.accuracy,
               "classifier_test": classifier.test, "edits_reaching_target": found,
               "flip_f2m": float(box.f2m), "flip_m2f": float(box.m2f), "noop_same_gender": float(box.noop),
               "ce_increase": float(box.ce_increase), "kl": float(box.kl), "others_unchanged": float(box.others_unchanged),
               "vector_norm": norm, "box_norm": float(directions["box"].norm()), "scales_tried": scales,
               "bias_side_effects": side, "seconds": time.perf_counter() - started}
    from saescope.bias.gender_vector.report import write_study_report

    write_json(out / "summary.json", summary)
    write_json(out / "generations.json", shown)
    _save_vectors(out, directions, classifier)
    with atomic_path(out / "report.html") as tmp:
        write_study_report(tmp, summary, flips, classifier, female_to_male, shown, out)
    return summary


def traced_layer(lm: LoadedModel, discovery: pd.DataFrame) -> int:
    """The MLP causal-trace peak at the name's last token, averaged over two names of each gender."""
    from saescope.editing.tracing import causal_trace

    picks = pd.concat([g.head(2) for _, g in discovery.groupby("gender")])
    effects = [causal_trace(lm, fill_subject(PROMPT, n), n, kinds=("mlp",)) for n in picks.name]
    return int(torch.stack([t.effects["mlp"][:, t.subject[-1]] for t in effects]).mean(0).argmax())


def discovery_deltas(lm: LoadedModel, discovery: pd.DataFrame, rome: RomeConfig, out: Path, batch: int,
                     progress: bool) -> tuple[Tensor, float]:
    """Δ of the ROME edit flipping each discovery name ([n, d_model]), resuming from ``out``; and the
    share of edits whose target loss ended under ln 2 (target more likely than not)."""
    from safetensors.torch import load_file, save_file

    path, log = out / "deltas.safetensors", out / "discovery_edits.csv"
    done = pd.read_csv(log) if log.exists() and path.exists() else pd.DataFrame(columns=["name", "gender", "layer"])
    if len(done) and (list(done.name) != list(discovery.name[:len(done)]) or int(done.layer.iloc[0]) != rome.layer):
        done = done.iloc[:0]  # another run's edits: start again
    deltas = list(load_file(path)["deltas"][:len(done)]) if len(done) else []
    rows = done.to_dict("records")
    bar = tqdm(total=len(discovery), initial=len(done), desc="discovery edits", disable=not progress)
    for start in range(len(done), len(discovery), batch):
        chunk = discovery.iloc[start:start + batch]
        requests = [EditRequest(PROMPT, n, ANSWERS[OTHER[g]]) for n, g in zip(chunk.name, chunk.gender)]
        for request, edit, gender in zip(requests, rome_edits(lm, requests, rome, batch_size=batch), chunk.gender):
            deltas.append(edit.delta)
            rows.append({"name": request.subject, "gender": gender, "layer": rome.layer,
                         "final_target_nll": edit.info["target_nll"][-1], "steps": edit.info["steps"],
                         "delta_norm": edit.info["delta_norm"]})
        with atomic_path(path) as tmp:
            save_file({"deltas": torch.stack(deltas).contiguous()}, str(tmp))
        with atomic_path(log) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        bar.update(len(chunk))
    bar.close()
    return torch.stack(deltas), float((pd.DataFrame(rows).final_target_nll < np.log(2)).mean())


SCALE_NAMES = 20  # discovery names per gender on which the vector's norm is chosen


def vector_norm(lm: LoadedModel, discovery: pd.DataFrame, deltas: Tensor, female_to_male: np.ndarray,
                weight: Tensor, rome: RomeConfig) -> tuple[float, list[dict]]:
    """The norm of the scaled vectors: the smallest multiple (1, 1.25, 1.5, 2, 3) of the mean ||Δ|| of
    the f→m discovery edits at which the box direction flips ≥ 90 % of ``SCALE_NAMES`` discovery names
    of each gender both ways (male names need larger changes: the model leans male)."""
    f2m = torch.from_numpy(np.array(female_to_male, dtype=bool))
    base = float(deltas[f2m].norm(dim=-1).mean())
    picked = pd.concat([g.head(SCALE_NAMES) for _, g in discovery.groupby("gender", sort=False)])
    updates = name_updates(lm, list(picked.name), list(picked.gender), rome.layer, rome)
    unit = box_vector(weight) / box_vector(weight).norm()
    return choose_scale(lm, updates, list(picked.gender), unit, tuple(base * m for m in (1, 1.25, 1.5, 2, 3)))


def study_directions(lm: LoadedModel, deltas: Tensor, female_to_male: np.ndarray, weight: Tensor, norm: float,
                     seed: int) -> dict[str, Tensor]:
    """f→m directions to compare, all but ``box`` scaled to ``norm``."""
    from saescope.bias.gender_vector.side_effects import caa_direction, sae_feature_direction

    f2m = torch.from_numpy(np.array(female_to_male, dtype=bool))
    unit = lambda v: v / v.norm() * norm
    generator = torch.Generator().manual_seed(seed)
    box = box_vector(weight)
    return {"box": box, "box_scaled": unit(box), "mean_delta": unit(deltas[f2m].mean(0) - deltas[~f2m].mean(0)),
            "caa": unit(-caa_direction(lm)), "sae_features": unit(-sae_feature_direction(lm)),
            "random": unit(torch.randn(deltas.shape[1], generator=generator))}


def _heldout(names: pd.DataFrame, limit: int) -> pd.DataFrame:
    heldout = names[names.split == "heldout"]
    if limit:
        heldout = pd.concat([g.head(limit) for _, g in heldout.groupby("gender", sort=False)])
    return heldout.reset_index(drop=True)


def _save_vectors(out: Path, directions: dict[str, Tensor], classifier) -> None:
    from safetensors.torch import save_file

    tensors = {f"direction.{k}": v.float().contiguous() for k, v in directions.items()}
    tensors["classifier.weight"] = classifier.weight.contiguous()
    with atomic_path(out / "vectors.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"classifier.bias": str(classifier.bias)})
