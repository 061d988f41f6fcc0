"""sae bench: SAEBench's output schema, known answers of its parts, a run on the bundled SAE, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from helpers import saescope
from saescope.errors import SaescopeError
from saescope.sae.bench.absorption import _absorption, _split_latents
from saescope.sae.bench.core import max_other_cosine
from saescope.sae.bench.meta_structure import meta_structure_eval
from saescope.sae.bench.run import EVALS, bench_sae, check_evals
from saescope.sae.bench.schema import FIELDS, eval_output
from saescope.sae.bench.scr_tpp import ablate, check_n_values, top_latents
from saescope.sae.bench.sparse_probing import probe_row, top_k_by_mean_difference
from saescope.sae.bench.synthetic import World, classification, mean_correlation, recovery
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
    assert check_evals("core, sparse_probing,scr") == ["core", "sparse_probing", "scr"]
    with pytest.raises(SaescopeError, match="the autointerp eval runs saescope's explain/score pipeline"):
        check_evals("core,autointerp")  # the SAE layer alone cannot run it: the layer above hands it in
    assert check_evals("autointerp", {"autointerp": None}) == ["autointerp"]
    with pytest.raises(SaescopeError, match="the unlearning eval is not built into sae bench yet"):
        check_evals("unlearning")
    with pytest.raises(SaescopeError, match="unknown eval 'nope'"):
        check_evals(["nope"])


def test_pooled_ablation_with_the_error_kept_is_the_per_token_ablation_pooled():
    generator = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig(6, 12, "relu"))
    tokens = torch.randn(3, 5, 6, generator=generator)  # three texts of five tokens
    f = sae.encode(tokens)
    chosen = np.array([1, 4, 7])
    per_token = tokens - f[..., chosen] @ sae.W_dec[chosen]  # x − Σ_S f_i d_i: x̂ changes, the error stays
    pooled = ablate(tokens.mean(1).double().numpy(), f.mean(1).double().detach().numpy(), chosen,
                    sae.W_dec.detach().double().numpy())
    assert np.allclose(pooled, per_token.mean(1).detach().numpy(), atol=1e-5)
    assert top_latents(np.array([0.0, 3.0, 0.0, 1.0]), 3).tolist() == [1, 3]  # zero effects never chosen
    with pytest.raises(SaescopeError, match="cannot ablate 20 latents: the SAE has 12"):
        check_n_values((2, 20), 12)


def test_absorption_known_cases():
    cos = torch.tensor([0.9, 0.5, 0.0, 0.3])
    main = [0]
    acts = torch.tensor([2.0, 0.0, 5.0, 0.0])  # the main latent carries the probe projection
    assert _absorption(1.8, acts, acts * cos, cos, main) == (0.0, False)
    acts = torch.tensor([0.0, 3.0, 5.0, 0.0])  # it is silent; latent 1 (cosine 0.5) carries it all
    assert _absorption(1.5, acts, acts * cos, cos, main) == (1.0, True)
    acts = torch.tensor([0.5, 1.0, 0.0, 0.0])  # the main latent fires weakly, latent 1 carries the rest
    fraction, full = _absorption(0.95, acts, acts * cos, cos, main)
    assert fraction == pytest.approx(0.5 / 0.95) and not full
    acts = torch.tensor([1.0, 1.0, 0.0, 0.0])  # an absorber below 40 % of the projection does not count
    assert _absorption(1.4, acts, acts * cos, cos, main) == (0.0, False)
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    f = np.abs(rng.normal(size=(400, 6))) * 0.1
    f[y & (np.arange(400) % 2 == 0), 2] += 3  # two latents split the concept between them
    f[y & (np.arange(400) % 2 == 1), 4] += 3
    from sklearn.metrics import f1_score
    assert sorted(_split_latents(f[:300], y[:300], f[300:], y[300:], 4, 0.03, f1_score)) == [2, 4]


def test_meta_structure_explains_a_decoder_built_from_few_directions():
    generator = torch.Generator().manual_seed(0)
    structured = SAE(SAEConfig(16, 64, "relu"))
    atoms = torch.nn.functional.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    with torch.no_grad():
        structured.W_dec.copy_(atoms[torch.arange(64) % 8])  # 64 latents, 8 distinct directions
    random = SAE(SAEConfig(16, 64, "relu"))
    fve = {name: meta_structure_eval(sae, width_ratio=0.25, k=1, steps=300, batch_size=64, lr=1e-2)[0]
           ["meta_structure"]["decoder_fraction_variance_explained"] for name, sae in
           [("structured", structured), ("random", random)]}
    assert fve["structured"] > 0.95 and fve["random"] < 0.6


def test_the_synthetic_world_and_its_recovery_metrics():
    world = World.make(d=16, n_features=40, parents=4, children_per_parent=2)
    x, active = world.sample(5000, torch.Generator().manual_seed(0))
    assert x.shape == (5000, 16) and active.shape == (5000, 40)
    children = active[:, 4:12].reshape(5000, 4, 2)
    assert not (children.any(-1) & ~active[:, :4]).any()  # a child fires only with its parent
    assert (children.sum(-1) <= 1).all()  # and at most one child per parent
    assert float(active.sum(-1).float().mean()) == pytest.approx(world.expected_l0, rel=0.05)
    mcc, matched = mean_correlation(world.vectors[torch.randperm(40)], world.vectors)
    assert mcc == pytest.approx(1.0) and sorted(matched.tolist()) == list(range(40))
    truth = classification(active, active, np.arange(40))
    assert truth == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    untrained = recovery(("topk",), steps=1, world=world)[0]  # the SAE does not start at the truth
    assert untrained["mcc"] < 0.6 and untrained["f1"] < 0.4
    with pytest.raises(SaescopeError, match="unknown architecture nope"):
        recovery(("topk", "nope"), steps=1, world=world)


def test_bench_writes_saebench_files_a_table_and_a_plot(lm, tmp_path):
    from saescope.sae.formats import load_sae

    options = {"meta_structure": {"steps": 20}, "absorption": {"words_per_letter": 15}, "scr": {"n_values": [2, 20]},
               "tpp": {"n_values": [2, 20]}}
    table = bench_sae(lm, {"default": load_sae("default")}, ",".join(EVALS), tmp_path, tokens=512, progress=False,
                      options=options)
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
    scr = json.loads((tmp_path / "scr" / "default_eval_results.json").read_text())
    assert set(scr["eval_result_metrics"]["scr_metrics"]) == {f"scr_{d}_threshold_{n}" for d in ("dir1", "dir2", "metric")
                                                              for n in (2, 20)}
    assert scr["eval_config"]["n_values"] == [2, 20]
    clean = {d["direction"]: d["clean_probe_acc"] for d in scr["eval_result_details"]}
    assert clean[1] > 0.8 and clean[2] > 0.6  # the probes trained without the spurious signal read their concept
    tpp = json.loads((tmp_path / "tpp" / "default_eval_results.json").read_text())["eval_result_metrics"]["tpp_metrics"]
    assert tpp["tpp_threshold_20_total_metric"] == pytest.approx(
        tpp["tpp_threshold_20_intended_diff_only"] - tpp["tpp_threshold_20_unintended_diff_only"])
    assert tpp["tpp_threshold_20_intended_diff_only"] > 0.05  # ablating a concept's latents hurts its probe
    absorption = json.loads((tmp_path / "absorption" / "default_eval_results.json").read_text())
    assert len(absorption["eval_result_details"]) >= 20 and "not meaningful" in absorption["eval_result_unstructured"]["warning"]
    assert 0 <= absorption["eval_result_metrics"]["mean"]["mean_absorption_fraction_score"] <= 1
    meta = json.loads((tmp_path / "meta_structure" / "default_eval_results.json").read_text())
    assert 0 < meta["eval_result_metrics"]["meta_structure"]["decoder_fraction_variance_explained"] < 1
    assert {"scr.scr_metrics.scr_metric_threshold_20", "absorption.mean.mean_num_split_features"} <= set(table)


def test_bench_cli_refuses_an_unbuilt_eval(tmp_path):
    result = saescope("sae", "bench", "default", "--evals", "unlearning", "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "the unlearning eval is not built into sae bench yet" in result.stderr
    assert not (tmp_path / "b").exists()


def test_autointerp_through_the_explain_and_score_pipeline(lm, tmp_path):
    from saescope.autointerp.saebench import EXTRA
    from saescope.sae.formats import load_sae

    options = {"autointerp": {"n_latents": 2, "tokens": 1024, "sample_tokens": 1024, "max_contexts": 2}}
    bench_sae(lm, {"default": load_sae("default")}, "autointerp", tmp_path, progress=False, options=options,
              extra=EXTRA)
    result = json.loads((tmp_path / "autointerp" / "default_eval_results.json").read_text())
    assert tuple(result) == FIELDS and result["eval_config"]["n_latents"] == 2
    assert 0 <= result["eval_result_metrics"]["autointerp"]["autointerp_score"] <= 1
    assert len(result["eval_result_details"]) == 2 and all(d["n_positive"] > 0 for d in result["eval_result_details"])


def test_synth_cli_reports_each_architecture_and_refuses_bad_input(tmp_path):
    result = saescope("sae", "synth", "--archs", "topk,matryoshka", "--steps", "3", "--out", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [r["arch"] for r in rows] == ["topk", "matryoshka"] and all(0 <= r["f1"] <= 1 for r in rows)
    bad = saescope("sae", "synth", "--archs", "topk,gated", "--steps", "3")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown architecture gated")
