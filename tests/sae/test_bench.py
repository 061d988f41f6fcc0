"""sae bench: SAEBench's output schema, known answers of its parts, a run on the bundled SAE, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from helpers import saescope
from saescope.errors import SaescopeError
from saescope.sae.bench.core import max_other_cosine
from saescope.sae.bench.run import bench_sae, check_evals
from saescope.sae.bench.schema import FIELDS, eval_output
from saescope.sae.bench.sparse_probing import probe_row, top_k_by_mean_difference
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.evaluation import _Totals


def test_both_explained_variances_are_their_definitions():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=generator) + torch.tensor([5.0, -3.0, 0.0, 1.0])  # a mean far from zero
    recon = x + 0.5 * torch.randn(50, 4, generator=generator)
    totals = _Totals(3, torch.device("cpu"))
    totals.add_reconstruction(x, recon, torch.ones(50, 3))
    totals.add_windows(torch.ones(50, 3), torch.ones(5, 10, dtype=torch.bool))
    totals.n_predictions = 1  # no CE pass here
    result = totals.result("h", "m")
    sse = float((x - recon).pow(2).sum())
    assert result.explained_variance == pytest.approx(1 - sse / float((x - x.mean(0)).pow(2).sum()), rel=1e-5)
    assert result.explained_variance_around_zero == pytest.approx(1 - sse / float(x.pow(2).sum()), rel=1e-5)
    assert result.explained_variance < result.explained_variance_around_zero  # around zero flatters
    assert result.l2_ratio == pytest.approx(float((recon.norm(dim=-1) / x.norm(dim=-1)).mean()), rel=1e-5)
    assert result.details["tokens_per_active_window"].tolist() == [10.0, 10.0, 10.0]


def test_max_other_cosine_and_the_probe_pick_known_answers():
    rows = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert max_other_cosine(rows, chunk=2).tolist() == pytest.approx([1.0, 1.0, 0.0])
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 40)
    x = rng.normal(size=(80, 6))
    x[:, 3] += 6 * y  # column 3 tells the classes apart
    assert top_k_by_mean_difference(x, y, 1).tolist() == [3]
    row = probe_row("sae", x[:40], y[:40], x[40:], y[40:], ks=(1, 2))
    assert row["sae_top_1_test_accuracy"] == 1.0 and set(row) == {"sae_test_accuracy", "sae_top_1_test_accuracy",
                                                                  "sae_top_2_test_accuracy"}


def test_the_output_has_saebenchs_fields_and_no_nan():
    sae = SAE(SAEConfig(8, 16, "topk", 2, "blocks.0.hook_resid_post"))
    out = eval_output("core", {"a": 1}, {"sparsity": {"l0": 2.0, "l1": float("nan")}}, [], sae, "mine", "m")
    assert tuple(out) == FIELDS and out["eval_result_metrics"]["sparsity"]["l1"] is None
    assert out["sae_cfg_dict"]["architecture"] == "topk" and out["sae_lens_id"] == "mine"
    json.dumps(out, allow_nan=False)


def test_unknown_and_unbuilt_evals_are_refused():
    assert check_evals("core, sparse_probing") == ["core", "sparse_probing"]
    with pytest.raises(SaescopeError, match="the scr eval is not built yet"):
        check_evals("core,scr")
    with pytest.raises(SaescopeError, match="unknown eval 'nope'"):
        check_evals(["nope"])


def test_bench_writes_saebench_files_a_table_and_a_plot(lm, tmp_path):
    from saescope.sae.formats import load_sae

    table = bench_sae(lm, {"default": load_sae("default")}, "core,sparse_probing", tmp_path, tokens=512, progress=False)
    core = json.loads((tmp_path / "core" / "default_eval_results.json").read_text())
    assert tuple(core) == FIELDS and core["eval_type_id"] == "core"
    metrics = core["eval_result_metrics"]
    assert {"model_behavior_preservation", "model_performance_preservation", "reconstruction_quality", "shrinkage",
            "sparsity", "token_stats", "misc_metrics"} == set(metrics)
    quality = metrics["reconstruction_quality"]
    assert quality["explained_variance"] < quality["explained_variance_legacy"] < 1
    assert 0 < metrics["misc_metrics"]["frac_alive"] <= 1 and metrics["sparsity"]["l0"] == pytest.approx(48, abs=1)
    assert len(core["eval_result_details"]) == 4608 and "which" not in core["eval_result_unstructured"]
    probing = json.loads((tmp_path / "sparse_probing" / "default_eval_results.json").read_text())
    assert [d["dataset_name"] for d in probing["eval_result_details"]] == ["bios_profession", "bios_gender"]
    accuracies = [v for group in probing["eval_result_metrics"].values() for v in group.values()]
    assert len(accuracies) == 8 and all(0.4 <= a <= 1 for a in accuracies)
    assert list(table.sae) == ["default"] and not math.isnan(table["core.sparsity.l0"].iloc[0])
    assert (tmp_path / "table.csv").exists() and (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_cli_refuses_an_unbuilt_eval(tmp_path):
    result = saescope("sae", "bench", "default", "--evals", "absorption", "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "the absorption eval is not built yet" in result.stderr
    assert not (tmp_path / "b").exists()
