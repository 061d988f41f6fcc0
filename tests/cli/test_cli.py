"""The command line: JSON output, and one-line errors with a non-zero exit for bad input."""

import json

import pytest

from helpers import saescope
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import save_sae

pytestmark = pytest.mark.embedded  # runs the embedded model in subprocesses


def test_info_json():
    result = saescope("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["n_layers"] == 30 and info["d_model"] == 576 and "blocks.12.hook_resid_post" in info["hook_points"]


@pytest.mark.parametrize("args, message", [
    (["sae", "eval", "/no/such/sae"], "does not exist"),
    (["sae", "train", "--out", "OUT", "--hook", "blocks.40.hook_resid_post"], "out of range"),
    (["sae", "train", "--out", "OUT", "--hook", "blocks.3.hook_nothing"], "unknown hook point"),
    (["sae", "train", "--out", "OUT", "--tokens", "0"], "positive"),
    (["sae", "eval", "WIDE"], "does not match"),
    (["sae", "top", "--sae", "WIDE", "--text", "x"], "does not match"),
    (["info", "--model", "/no/such/model"], "does not exist"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, message):
    save_sae(SAE(SAEConfig(64, 128, "relu", hook_name="blocks.2.hook_resid_post")), tmp_path / "wide")
    args = [str(tmp_path / "wide") if a == "WIDE" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = saescope(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def small_run(lm, tmp_path_factory):
    import torch

    from saescope.features.extract import extract_features

    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    sae = SAE(SAEConfig(576, 64, "topk", k=4, hook_name="blocks.2.hook_resid_post")).requires_grad_(False)
    save_sae(sae, folder / "sae")
    extract_features(lm, sae, folder / "run", tokens=512, batch_size=4, context=64, top_k=3, progress=False,
                     sae_name=str(folder / "sae"))
    return folder


def test_features_commands_read_a_run(small_run):
    run = str(small_run / "run")
    table = saescope("features", "table", run, "--sort", "max", "--json", "--n", "5")
    assert table.returncode == 0, table.stderr
    rows = json.loads(table.stdout)
    assert len(rows) == 5 and rows[0]["max"] >= rows[-1]["max"]
    feature = str(rows[0]["feature"])
    shown = saescope("features", "show", run, feature, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["stats"]["max"] == pytest.approx(rows[0]["max"])
    assert saescope("features", "show", run, feature).returncode == 0
    token = json.loads(shown.stdout)["top_tokens"][0]
    found = saescope("features", "search", run, "--token", token, "--json")
    assert found.returncode == 0 and int(feature) in [r["feature"] for r in json.loads(found.stdout)]
    by_text = saescope("features", "search", run, "--text", "The cat sat on the mat.", "--sae",
                       str(small_run / "sae"), "--json")
    assert by_text.returncode == 0, by_text.stderr
    csv = saescope("features", "table", run, "--csv", "--n", "0")
    import io

    import pandas as pd

    assert csv.returncode == 0 and len(pd.read_csv(io.StringIO(csv.stdout))) == 64


@pytest.mark.parametrize("args, message", [
    (["features", "show", "RUN", "64"], "out of range"),
    (["features", "show", "SAE", "1"], "not a features run"),
    (["features", "table", "RUN", "--sort", "nope"], "unknown column"),
    (["features", "search", "RUN", "--token", "zzzqqq"], "no feature has"),
    (["features", "search", "RUN"], "exactly one"),
    (["features", "search", "RUN", "--text", "hi", "--sae", "OTHER"], "another SAE"),
    (["features", "extract", "--out", "NEW", "--sae", "SAE", "--tokens", "0"], "positive"),
    (["features", "dashboard", "RUN", "--out", "NEW", "--features", "1,x"], "comma-separated"),
])
def test_features_bad_input(small_run, tmp_path, args, message):
    import torch

    torch.manual_seed(5)
    save_sae(SAE(SAEConfig(576, 64, "topk", k=4, hook_name="blocks.2.hook_resid_post")), tmp_path / "other")
    names = {"RUN": small_run / "run", "SAE": small_run / "sae", "OTHER": tmp_path / "other", "NEW": tmp_path / "new"}
    result = saescope(*[str(names.get(a, a)) for a in args])
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_steer_prints_paired_generations_and_saves_the_intervention(small_run, tmp_path):
    sae = str(small_run / "sae")
    result = saescope("steer", "--sae", sae, "--feature", "3", "--coeff", "0", "--prompt", "Hello there",
                      "--max-new-tokens", "6", "--n", "2", "--json", "--save", str(tmp_path / "iv.json"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)["results"][0]
    assert out["steered"] == out["unsteered"] and len(out["steered"]) == 2  # coefficient 0: identical
    again = saescope("steer", "--sae", sae, "--intervention", str(tmp_path / "iv.json"), "--prompt", "Hello there",
                     "--max-new-tokens", "6", "--n", "2", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["results"][0]["steered"] == out["steered"]


@pytest.mark.parametrize("args, message", [
    (["steer", "--feature", "64", "--prompt", "hi"], "out of range"),
    (["steer", "--feature", "1", "--coeff", "nan", "--prompt", "hi"], "finite"),
    (["steer", "--feature", "1", "--coeff", "inf", "--prompt", "hi"], "finite"),
    (["steer", "--feature", "1", "--prompt", ""], "empty prompt"),
    (["steer", "--feature", "1", "--prompt", "hi", "--max-new-tokens", "0"], "max_new_tokens"),
    (["steer", "--feature", "1"], "--prompt"),
    (["steer", "--method", "swap", "--scores", "SCORES", "--prompt", "hi"], "another SAE"),
    (["steer", "--prompt", "hi"], "exactly one"),
    (["steer", "sweep", "--feature", "1", "--coeffs", "1,x"], "comma-separated"),
    (["align", "score", "--align", "EMPTY", "--out", "NEW"], "no prompts"),
])
def test_steer_bad_input(small_run, tmp_path, args, message):
    import torch

    from saescope.steering.ibm import AlignmentScores

    AlignmentScores(torch.rand(64), 0.5, "0" * 16, 1, 2).save(tmp_path / "scores.json")
    (tmp_path / "empty.txt").write_text("\n")
    names = {"SCORES": tmp_path / "scores.json", "EMPTY": tmp_path / "empty.txt", "NEW": tmp_path / "new.json"}
    result = saescope(*[str(names.get(a, a)) for a in args], "--sae", str(small_run / "sae"))
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
