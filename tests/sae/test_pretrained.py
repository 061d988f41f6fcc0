"""Pretrained SAEs by name, offline: a local Hugging Face cache built by the test, a SAELens-style registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import save_sae

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub(tmp_path):
    """A local HF cache holding repo ``ours/tiny-saes`` with a SAELens-format SAE and a Gemma Scope-style npz."""
    cache = tmp_path / "hf"
    repo = cache / "models--ours--tiny-saes"
    snapshot = repo / "snapshots" / COMMIT
    torch.manual_seed(0)
    saelens = save_sae(SAE(SAEConfig(576, 64, "topk", k=4, hook_name="blocks.3.hook_resid_post",
                                     model_name="SmolLM2-135M-Instruct")), snapshot / "blocks.3.hook_resid_post")
    npz = snapshot / "layer_5" / "width_64" / "average_l0_9"
    npz.mkdir(parents=True)
    g = np.random.default_rng(0)
    params = {"W_enc": g.normal(size=(576, 64)).astype(np.float32), "W_dec": g.normal(size=(64, 576)).astype(np.float32),
              "b_enc": np.zeros(64, np.float32), "b_dec": np.zeros(576, np.float32),
              "threshold": np.full(64, 0.5, np.float32)}
    np.savez(npz / "params.npz", **params)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    registry = tmp_path / "registry.yaml"
    registry.write_text("tiny-res:\n  model: SmolLM2-135M-Instruct\n  repo_id: ours/tiny-saes\n  saes:\n"
                        "  - id: layer_3\n    path: blocks.3.hook_resid_post\n"
                        "  - id: layer_5/width_64/canonical\n    path: layer_5/width_64/average_l0_9\n    l0: 9\n")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "SAESCOPE_SAE_REGISTRY": str(registry)}
    return env, saelens, params


def _run(env, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_names_load_offline_from_the_local_hf_cache(hub):
    env, saelens, params = hub
    code = """
import json, torch
from saescope.sae.formats import load_sae
a = load_sae("tiny-res/layer_3"); b = load_sae("hf:ours/tiny-saes/blocks.3.hook_resid_post")
c = load_sae("tiny-res/layer_5/width_64/canonical")
print(json.dumps({"same": bool(torch.equal(a.W_enc, b.W_enc)), "a": [a.cfg.activation, a.cfg.hook_name, a.d_sae],
                  "c": [c.cfg.activation, c.cfg.hook_name, c.d_in, c.d_sae, c.cfg.apply_b_dec_to_input],
                  "w": float(c.W_enc[3, 7]), "t": float(c.threshold[0])}))
"""
    done = _run(env, code)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["same"] and out["a"] == ["topk", "blocks.3.hook_resid_post", 64]
    assert out["c"] == ["jumprelu", "blocks.5.hook_resid_post", 576, 64, False]
    assert out["w"] == pytest.approx(float(params["W_enc"][3, 7])) and out["t"] == pytest.approx(0.5)


@pytest.mark.embedded  # loads the embedded model in a subprocess
def test_the_cli_takes_a_name_and_unknown_or_uncached_names_are_one_line_errors(hub):
    env, _, _ = hub
    cli = [sys.executable, "-m", "saescope.cli.main"]
    done = subprocess.run([*cli, "sae", "top", "--text", "The nurse said that she", "--sae", "tiny-res/layer_3",
                           "--n", "3", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads(done.stdout)) >= 1
    for name, message in [("tiny-res/layer_9", "has no SAE 'layer_9'"),
                          ("hf:ours/not-cached/x", "not in the local Hugging Face cache"),
                          ("nowhere/at-all", "neither a folder nor a known name")]:
        bad = subprocess.run([*cli, "sae", "top", "--text", "hi", "--sae", name], capture_output=True, text=True,
                             env=env, timeout=300)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (name, bad.stderr)
