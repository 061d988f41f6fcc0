"""The editing commands end to end: edit rome → edit eval → generate/steer with the edit; edit ft; the
gender-vector study on a few names (every output file, numbers in range; resuming is tested in
``test_gender_vector.py``)."""

from __future__ import annotations

import json

import pytest

from helpers import saescope

ROME = ["--prompt", "Name: {}. Gender:", "--layer", "6", "--prefixes", "0", "--stats-tokens", "2048", "--json"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh SAESCOPE_HOME for the subprocesses (key statistics are cached there)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAESCOPE_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def ben(home, tmp_path_factory):
    out = tmp_path_factory.mktemp("edits") / "ben"
    result = saescope("edit", "rome", *ROME, "--subject", "Ben", "--target", " Female", "--out", str(out),
                      "--paraphrases", "First name: {}. Gender:", "--neighbours", "Tom,James")
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


@pytest.mark.slow  # ~2 min; test_editing.py covers ROME through the API, bench_edit.py end to end
def test_rome_then_eval_generate_and_steer_with_the_edit(ben):
    out, made = ben
    assert made["scores"]["efficacy"] == 1.0 and made["scores"]["paraphrase"] == 1.0
    assert 0.0 <= made["scores"]["specificity"] <= 1.0
    assert (out / "edit.safetensors").exists() and (out / "scores.json").exists()
    evaluated = saescope("edit", "eval", str(out), "--neighbours", "Tom,James", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["scores"]["efficacy"] == 1.0
    generated = saescope("generate", "--prompt", "Name: Ben. Gender:", "--edit", str(out), "--compare",
                         "--temperature", "0", "--max-new-tokens", "2", "--json")
    assert generated.returncode == 0, generated.stderr
    row = json.loads(generated.stdout)[0]
    assert row["outputs"][0].strip().startswith("Female") and row["plain"][0].strip().startswith("Male")
    steered = saescope("steer", "--intervention", str(out), "--prompt", "Name: Ben. Gender:", "--temperature", "0",
                       "--max-new-tokens", "2", "--json")
    assert steered.returncode == 0, steered.stderr
    result = json.loads(steered.stdout)["results"][0]
    assert result["steered"][0].strip().startswith("Female") and result["unsteered"][0].strip().startswith("Male")


@pytest.mark.slow  # ~40 s; FT-L is tested through the API in test_gender_vector.py
def test_ft_l_from_the_command_line(home, tmp_path):
    result = saescope("edit", "ft", "--prompt", "Name: {}. Gender:", "--subject", "Ben", "--target", " Female",
                      "--layer", "9", "--steps", "5", "--out", str(tmp_path / "ft"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["method"] == "ft-l" and data["scores"]["p_target_after"] > data["scores"]["p_target_before"]


@pytest.mark.slow  # ~3 min (the SAE gender features are ranked on the way); bench_edit.py runs the study too
def test_gender_vector_study_on_a_few_names(home, tmp_path):
    args = ["edit", "gender-vector", "--out", str(tmp_path / "gv"), "--names", "10", "--layer", "6", "--steps", "10",
            "--stats-tokens", "2048", "--heldout-limit", "2", "--ce-edits", "1", "--ce-tokens", "256",
            "--generations", "1", "--no-bias-side-effects", "--json"]
    result = saescope(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["discovery"] == 10 and summary["heldout"] == 4 and summary["layer"] == 6
    assert summary["classifier_acc"] == 1.0  # f→m and m→f deltas separate even with 7 training edits
    for key in ("flip_f2m", "flip_m2f", "noop_same_gender", "others_unchanged"):
        assert 0.0 <= summary[key] <= 1.0
    folder = tmp_path / "gv"
    for name in ("report.html", "names.csv", "deltas.safetensors", "directions.csv", "vectors.safetensors",
                 "pca.png", "flips.png", "generations.json", "summary.json"):
        assert (folder / name).exists(), name
    directions = (folder / "directions.csv").read_text()
    assert all(d in directions for d in ("box_scaled", "mean_delta", "caa", "sae_features", "random"))
    report = (folder / "report.html").read_text()
    assert "Directions compared" in report and "<svg" in report and "Name: " in report
