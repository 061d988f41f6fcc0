"""The command line: JSON output, and one-line errors with a non-zero exit for bad input."""

import json
import subprocess
import sys

import pytest

from saescope.sae import SAE, SAEConfig
from saescope.sae_io import save_sae


def saescope(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saescope.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


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
