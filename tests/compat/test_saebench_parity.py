"""saescope's SAEBench evals against SAEBench 0.6.0's own code on the same tensors (``saebench-0.6.0``,
written by ``saebench_reference.py`` in a venv with SAEBench installed): ≤ 1e-4 absolute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saescope.sae.bench.absorption import _absorption
from saescope.sae.bench.scr_tpp import ablate, effects

FILES = Path(__file__).parent / "saebench-0.6.0"
KEYS = ("male / female", "female_data_only", "professor / nurse", "nurse_data_only")


@pytest.fixture(scope="module")
def reference():
    tensors = {k: v.double() for k, v in load_file(FILES / "inputs.safetensors").items()}
    return tensors, json.loads((FILES / "expected.json").read_text())


def _encode(t: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])


def _pooled(t: dict, key: str) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Mean over the unpadded tokens (rows that are not all zero) of the activations and the latents."""
    acts = t[f"acts.{key}"]
    keep = (acts.sum(-1) != 0).double()
    count = keep.sum(1, keepdim=True)
    f = _encode(t, acts) * keep[..., None]
    return ((acts * keep[..., None]).sum(1) / count).numpy(), (f.sum(1) / count).numpy(), keep


def test_scr_and_tpp_effects_match_saebench(reference):
    t, expected = reference
    W_dec, direction = t["W_dec"].numpy(), t["probe"][0].numpy()
    (_, f_male, _), (_, f_female, _) = _pooled(t, KEYS[0]), _pooled(t, KEYS[1])
    f = np.concatenate([f_male, f_female])
    y = np.array([1] * len(f_male) + [0] * len(f_female))  # SAEBench's positive class: the first of the pair
    assert effects(f, y, direction, W_dec, signed=False) == pytest.approx(np.array(expected["scr_effects"]), abs=1e-4)
    (_, f_prof, _), (_, f_nurse, _) = _pooled(t, KEYS[2]), _pooled(t, KEYS[3])
    f = np.concatenate([f_prof, f_nurse])
    y = np.array([1] * len(f_prof) + [0] * len(f_nurse))
    assert effects(f, y, direction, W_dec, signed=True) == pytest.approx(np.array(expected["tpp_effects"]), abs=1e-4)


def test_ablation_with_the_error_kept_matches_saebench_on_unpadded_texts(reference):
    t, expected = reference
    x, f, keep = _pooled(t, KEYS[2])
    ours = ablate(x, f, np.array([1, 5, 9, 30]), t["W_dec"].numpy())
    theirs = np.array(expected["ablated"])
    full = keep.all(1).numpy()
    assert full.sum() >= 2  # some texts have no padding
    assert ours[full] == pytest.approx(theirs[full], abs=1e-4)
    # On padded texts SAEBench lets each padded position add −f(0)[S]·W_dec[S] (the error term of a zero
    # input): the two differ there by exactly that, which saescope leaves out (docs/guides/sae_bench.md).
    zero = _encode(t, torch.zeros(1, t["W_dec"].shape[1]))[0, [1, 5, 9, 30]] @ t["W_dec"][[1, 5, 9, 30]]
    padded = (keep.shape[1] - keep.sum(1)) / keep.sum(1)
    assert theirs[~full] == pytest.approx(ours[~full] - padded[~full, None].numpy() * zero.numpy(), abs=1e-4)


@pytest.mark.parametrize("main", [[3], [3, 17]])
def test_absorption_per_word_matches_saebench(reference, main):
    t, expected = reference
    x = t["absorption_acts"]
    direction = t["probe"][0] / t["probe"][0].norm()
    cos = torch.nn.functional.normalize(t["W_dec"], dim=-1) @ direction
    got = []
    for row in x:
        acts = _encode(t, row)
        fraction, full = _absorption(float(row @ direction), acts, acts * cos, cos, main)
        got.append([fraction, full])
    want = expected[f"absorption.{'_'.join(map(str, main))}"]
    assert [g[1] for g in got] == [w[1] for w in want]
    assert [g[0] for g in got] == pytest.approx([w[0] for w in want], abs=1e-4)
    assert any(w[0] > 0 for w in want)  # the case is not all zeros
