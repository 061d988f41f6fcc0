"""``--dtype auto``: bfloat16 only where it is faster; the choice is cached and explained."""

from __future__ import annotations

import json

import pytest
import torch

from saescope import precision
from saescope.errors import SaescopeError

pytestmark = pytest.mark.precision  # run again with --dtype auto meaning bfloat16 (Makefile)


def test_explicit_dtypes_parse_and_auto_resolves():
    assert precision.parse_dtype("bf16") is torch.bfloat16 and precision.parse_dtype("float32") is torch.float32
    assert precision.parse_dtype("auto") is None and precision.parse_dtype(None) is None
    assert precision.resolve_dtype("float32") is torch.float32
    assert precision.resolve_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(SaescopeError, match="unknown dtype"):
        precision.parse_dtype("float8")


def test_cpu_without_native_bf16_gets_float32_and_says_why(monkeypatch):
    monkeypatch.delenv(precision.AUTO_VARIABLE, raising=False)
    precision._device_report.cache_clear()
    monkeypatch.setattr(precision, "cpu_bf16_flags", list)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    report = precision.precision_report("cpu")
    assert report["choice"] == "float32" and "no native bfloat16" in report["reason"]
    assert precision.auto_dtype("cpu") is torch.float32
    precision._device_report.cache_clear()


@pytest.mark.parametrize("bf16_s, choice", [(0.01, "bfloat16"), (0.5, "float32")])
def test_native_bf16_is_confirmed_by_a_cached_benchmark(monkeypatch, tmp_path, bf16_s, choice):
    precision._device_report.cache_clear()
    monkeypatch.delenv(precision.AUTO_VARIABLE, raising=False)
    monkeypatch.setenv("SAESCOPE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ["amx_bf16"])
    calls = []

    def fake_benchmark():
        calls.append(1)
        return {"float32_s": 0.1, "bfloat16_s": bf16_s}

    monkeypatch.setattr(precision, "matmul_seconds", fake_benchmark)
    assert precision.precision_report("cpu")["choice"] == choice
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert list(cached.values()) == [{"float32_s": 0.1, "bfloat16_s": bf16_s}]
    precision._device_report.cache_clear()
    assert precision.precision_report("cpu")["choice"] == choice and len(calls) == 1  # read from the cache
    precision._device_report.cache_clear()


def test_the_micro_benchmark_times_both_dtypes():
    timing = precision.matmul_seconds(64, 32, 64, repeats=1)
    assert set(timing) == {"float32_s", "bfloat16_s"} and all(v > 0 for v in timing.values())


def test_capability_names_the_vector_unit():
    assert precision.cpu_capability().split("+")[0] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("forced", ["float32", "bfloat16"])
def test_the_environment_forces_what_auto_picks_for_bulk_work_only(monkeypatch, forced):
    monkeypatch.setenv(precision.AUTO_VARIABLE, forced)
    assert precision.resolve_dtype("auto") is precision.DTYPES[forced]
    assert precision.precision_report("cpu")["reason"] == f"forced by ${precision.AUTO_VARIABLE}"
    assert precision.resolve_dtype("auto", purpose=precision.MEASURE) is torch.float32  # scores: float32 always
    assert precision.resolve_dtype("bf16", purpose=precision.MEASURE) is torch.bfloat16  # unless asked for
    record = precision.precision_record(torch.bfloat16, precision.BULK)
    assert record == {"dtype": "bfloat16", "purpose": "bulk", "rule": precision.RULES["bulk"]}


def test_a_bad_forced_dtype_or_purpose_is_refused(monkeypatch):
    monkeypatch.setenv(precision.AUTO_VARIABLE, "auto")
    with pytest.raises(SaescopeError, match="SAESCOPE_AUTO_DTYPE"):
        precision.resolve_dtype("auto")
    monkeypatch.setenv(precision.AUTO_VARIABLE, "float9")
    with pytest.raises(SaescopeError, match="unknown dtype"):
        precision.resolve_dtype(None)
    with pytest.raises(ValueError, match="purpose"):
        precision.resolve_dtype("float32", purpose="fast")
