"""Contrastive steering: pair reading, statistics on a known answer, the fit, and evaluation."""

import json

import pytest
import torch

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig
from saescope.steering.contrast.evaluate import evaluate_contrast
from saescope.steering.contrast.fit import fit_contrast
from saescope.steering.contrast.pairs import ContrastPair, read_pairs
from saescope.steering.contrast.stats import feature_tests, sparse_fit

HOOK = "blocks.6.hook_resid_post"


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    from saescope.sae.formats import load_sae, save_sae

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sae") / "sae"
    save_sae(SAE(SAEConfig(576, 256, "topk", k=16, hook_name=HOOK)), folder)
    return load_sae(folder)


def test_read_pairs_errors_name_the_line(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"positive": "a", "negative": "b"}) + "\n{oops\n")
    with pytest.raises(SaescopeError, match="p.jsonl, line 2: not valid JSON"):
        read_pairs(tmp_path / "p.jsonl")
    (tmp_path / "q.jsonl").write_text(json.dumps({"positive": "a", "negative": "b"}) + "\n")
    with pytest.raises(SaescopeError, match="at least 2"):
        read_pairs(tmp_path / "q.jsonl")
    (tmp_path / "r.jsonl").write_text(json.dumps({"positive": "a"}) + "\n")
    with pytest.raises(SaescopeError, match="r.jsonl, line 1: expected a JSON object with positive, negative"):
        read_pairs(tmp_path / "r.jsonl")


def test_feature_tests_find_the_planted_feature():
    g = torch.Generator().manual_seed(0)
    deltas = torch.randn(40, 50, generator=g) * 0.1
    deltas[:, 7] += 1.0  # consistently larger on the positive side
    table = feature_tests(deltas)
    assert table.feature.iloc[0] == 7 and table.significant.iloc[0] and table.q.iloc[0] < 1e-10
    assert table.significant.sum() <= 3  # BH keeps false positives rare


def test_sparse_fit_recovers_a_sparse_combination(sae):
    directions = sae.decoder_directions()
    target = 3 * directions[5] - 2 * directions[40] + 0.5 * directions[100]
    curve, path = sparse_fit(sae, target, 8)
    assert curve[2]["r2"] > 0.999 and curve[0]["r2"] < curve[1]["r2"] < curve[2]["r2"]
    coefs = path[:, 2]
    assert set(coefs.nonzero().flatten().tolist()) == {5, 40, 100}
    torch.testing.assert_close(coefs[[5, 40, 100]], torch.tensor([3.0, -2.0, 0.5]), rtol=1e-4, atol=1e-4)


def test_fit_and_eval_on_gender_pairs(lm, sae, tmp_path):
    pairs = read_pairs_shipped("gender_train")[:12]
    report = fit_contrast(lm, sae, pairs, tmp_path / "fit", max_features=16)
    assert report["pairs_aligned_by_position"] == 12 and report["caa_norm"] > 0
    assert report["positions"][0]["offset_from_first_difference"] == 0
    assert {"caa.json", "sae_fit.json", "report.json", "features.parquet"} <= {p.name for p in (tmp_path / "fit").iterdir()}
    curve = report["sparse_fit"]["curve"]
    assert all(a["r2"] <= b["r2"] + 1e-9 for a, b in zip(curve, curve[1:]))
    table = evaluate_contrast(lm, tmp_path / "fit", read_pairs_shipped("gender_heldout")[:4], [-2, 0, 2],
                              neutral_windows=2)
    caa = table[table.vector == "caa"].set_index("multiplier")
    assert caa.loc[0, "kl_neutral"] == pytest.approx(0.0, abs=1e-6) and caa.loc[0, "mean_shift"] == pytest.approx(0.0, abs=1e-6)
    assert caa.loc[2, "kl_neutral"] > 0 and caa.loc[-2, "kl_neutral"] > 0
    assert caa.loc[2, "mean_shift"] != 0 and 0 <= caa.loc[2, "intended"] <= 1
    assert set(table.vector) >= {"caa", "sae_fit"} and len(table) % 3 == 0


def test_fit_rejects_an_sae_for_another_hook(lm, sae, tmp_path):
    pairs = [ContrastPair("she ran", "he ran"), ContrastPair("her cat", "his cat")]
    with pytest.raises(SaescopeError, match="another hook|not blocks"):
        fit_contrast(lm, sae, pairs, tmp_path / "x", hook="blocks.3.hook_resid_post")


def read_pairs_shipped(name):
    from importlib import resources
    from pathlib import Path

    return read_pairs(Path(str(resources.files("saescope") / "data" / "pairs" / f"{name}.jsonl")))
