"""Helpers shared by the tests (``tests/`` is on ``sys.path``, see ``pyproject.toml``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def saescope(*args: str, timeout: int = 600, isolated: bool = False) -> subprocess.CompletedProcess:
    """Run the real ``saescope`` command line: in this process (the entry point ``cli.main.run`` with its
    own argv, stdout and stderr; saves the ~2 s of importing torch and transformers per call), or with
    ``isolated=True`` in a subprocess (signals, environment, anything that must not share this process)."""
    if isolated:
        return subprocess.run([sys.executable, "-m", "saescope.cli.main", *args], capture_output=True, text=True,
                              timeout=timeout)
    import contextlib
    import io

    from saescope.cli.main import run

    out, err, code = io.StringIO(), io.StringIO(), 0
    argv = sys.argv
    sys.argv = ["saescope", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["saescope", *args], code, out.getvalue(), err.getvalue())


def tiny_model(family: str) -> torch.nn.Module:
    """A 2-layer random model of a family, built from a config (no download)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(vocab_size=128)
    configs = {
        "gpt2": dict(n_layer=2, n_embd=32, n_head=2, n_positions=64),
        "gpt_neox": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64),
        "gemma2": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, head_dim=16),
        "qwen2": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=64),
        "mistral": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                        intermediate_size=64),
    }
    config = AutoConfig.for_model(family, **common, **configs[family])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def small_topk_sae(d_sae: int, hook: str = "blocks.2.hook_resid_post"):
    """A random TopK SAE (k=4) on the embedded model's width whose features fire often (positive encoder bias)."""
    from saescope.sae.core import SAE, SAEConfig

    torch.manual_seed(0)
    sae = SAE(SAEConfig(576, d_sae, "topk", k=4, hook_name=hook))
    with torch.no_grad():
        sae.b_enc.fill_(0.5)
    return sae.requires_grad_(False)


@contextmanager
def chromium_browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright, closed on exit; the test is skipped when either is missing."""
    import shutil

    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian chromium is not installed (as root: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
