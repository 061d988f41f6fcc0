"""Data-parallel SAE training under torchrun (gloo, 2 processes): the same weights as one process on the same
global batches; a killed rank fails the job cleanly and --resume finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.embedded  # runs the embedded model in subprocesses

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOOK = "blocks.3.hook_resid_post"


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saescope.cli.main", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("acts")
    done = _cli("activations", "cache", "--hook", HOOK, "--tokens", "8192", "--out", str(folder / "acts"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "8,2" in done.stdout  # ~8,192 tokens minus attention sinks
    return folder / "acts" / HOOK


def _train(cache: Path, out: Path, workers: int, *extra: str) -> list[str]:
    return ["sae", "train", "--hook", HOOK, "--activations", str(cache), "--features", "256", "--k", "8",
            "--tokens", str(200 * 128), "--batch-size", "128", "--workers", str(workers), "--out", str(out),
            "--dtype", "float32", *extra]  # exact comparisons: float32 whatever --dtype auto means here


def test_two_ranks_train_the_same_weights_as_one(cache, tmp_path):
    """Up to float rounding (summing two half-batch gradients rounds differently from one batch). Over
    hundreds of steps one rounding can flip a TopK choice and the runs then drift apart (seen after ~100
    steps on a Xeon with AVX-512, never on an EPYC), so the comparison is over the first 50 steps."""
    for workers in (1, 2):
        args = _train(cache, tmp_path / f"sae{workers}", workers)
        args[args.index("--tokens") + 1] = str(50 * 128)
        done = _cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (load_file(tmp_path / f"sae{w}" / "sae_weights.safetensors") for w in (1, 2))
    assert set(one) == set(two) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    for name in one:
        assert float((one[name] - two[name]).abs().max()) <= 1e-5, name
    logs = [(tmp_path / f"sae{w}" / "training_log.jsonl").read_text().splitlines()[-1] for w in (1, 2)]
    assert '"step": 50' in logs[0] and '"step": 50' in logs[1]


def test_a_missing_cache_and_a_batch_that_does_not_split_are_refused(cache, tmp_path):
    """Both are refused before any model is loaded."""
    common = ["sae", "train", "--features", "64", "--k", "4", "--tokens", "1280", "--workers", "2", "--hook", HOOK]
    cases = [([*common, "--batch-size", "128", "--out", str(tmp_path / "a")], "cached activations"),
             ([*common, "--activations", str(cache), "--batch-size", "127", "--out", str(tmp_path / "c")],
              "does not split into 2 workers")]
    for args, message in cases:
        done = _cli(*args)
        assert done.returncode == 2 and message in done.stderr, (message, done.stderr[-2000:])
        assert "Traceback (most recent" not in done.stderr


def _worker_pids(rank: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"saescope.cli.main" in cmdline and f"RANK={rank}".encode() in environ and b"LOCAL_RANK=" + str(
                rank).encode() in environ:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_killed_rank_fails_the_job_and_resume_finishes_it(cache, tmp_path):
    out = tmp_path / "sae"
    args = _train(cache, out, 2, "--checkpoint-every", "20")
    args[args.index("--tokens") + 1] = str(1000 * 128)
    job = subprocess.Popen([sys.executable, "-m", "saescope.cli.main", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "checkpoint" / "state.json").exists():
        time.sleep(0.5)
    assert (out / "checkpoint" / "state.json").exists()
    for pid in _worker_pids(1):
        os.kill(pid, signal.SIGKILL)
    _, stderr = job.communicate(timeout=300)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert job.returncode == 2 and len(errors) == 1 and "a worker was killed" in errors[0] and "--resume" in errors[0]
    assert "Traceback" not in stderr, stderr[-3000:]  # the surviving rank's failed collective is not shown
    assert not (out / "cfg.json").exists()
    resumed = _cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "cfg.json").exists() and not (out / "checkpoint").exists()


def test_an_error_every_rank_hits_is_shown_once(cache, tmp_path):
    done = _cli("sae", "train", "--hook", "blocks.4.hook_resid_post", "--activations", str(cache), "--features", "64",
                "--k", "4", "--tokens", "1280", "--batch-size", "128", "--out", str(tmp_path / "other"), "--workers", "2")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: ") and "not of hook (--hook)" in lines[0] and "--resume" not in lines[0]


def test_a_cache_of_another_hook_and_a_truncated_shard_are_named(cache, tmp_path):
    import shutil

    done = _cli("sae", "train", "--hook", "blocks.4.hook_resid_post", "--activations", str(cache), "--features", "64",
                "--k", "4", "--tokens", "1280", "--batch-size", "128", "--out", str(tmp_path / "other"))
    assert done.returncode == 2 and "not of hook (--hook)" in done.stderr, done.stderr[-2000:]
    bad = tmp_path / "acts" / HOOK
    shutil.copytree(cache.parent, tmp_path / "acts")
    data = (bad / "shard_00000.safetensors").read_bytes()
    (bad / "shard_00001.safetensors").write_bytes(data[: len(data) // 2])
    done = _cli("sae", "train", "--hook", HOOK, "--activations", str(bad), "--features", "64", "--k", "4",
                "--tokens", "1280", "--batch-size", "128", "--out", str(tmp_path / "sae"))
    assert done.returncode == 2 and "shard_00001.safetensors is not a readable activation shard" in done.stderr
    assert not (tmp_path / "sae" / "cfg.json").exists()
