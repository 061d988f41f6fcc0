"""Ctrl-C during ``features extract``: a checkpoint, a message that says how to resume, exit 130."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import save_sae

pytestmark = pytest.mark.embedded  # runs the embedded model in subprocesses


def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    torch.manual_seed(0)
    sae = save_sae(SAE(SAEConfig(576, 128, "topk", k=4, hook_name="blocks.6.hook_resid_post")), tmp_path / "sae")
    args = [sys.executable, "-m", "saescope.cli.main", "features", "extract", "--sae", str(sae), "--tokens", "6000",
            "--batch-size", "1", "--context", "64", "--out", str(tmp_path / "run")]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[bytes] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: process.stderr.read(64), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not re.search(rb"[1-9][0-9.]*k/6", b"".join(seen)):
        time.sleep(0.5)  # wait until some batches are done
    process.send_signal(signal.SIGINT)
    process.wait(timeout=300)
    reader.join(timeout=10)
    stderr = b"".join(seen).decode("utf-8", "replace")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted after" in stderr and "--resume" in stderr
    assert (tmp_path / "run" / "checkpoint" / "state.json").exists()
    other = [a if a != "64" else "32" for a in args]  # --context 32 on a context-64 checkpoint: refused, named
    mixed = subprocess.run([*other, "--resume"], capture_output=True, text=True, timeout=600)
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr, mixed.stderr
    assert mixed.stderr.strip().splitlines()[-1].startswith("error: cannot resume") and "context 64" in mixed.stderr
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "run" / "manifest.json").exists() and not (tmp_path / "run" / "checkpoint").exists()
