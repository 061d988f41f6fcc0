"""Which floating-point precision to run in: ``dtype="auto"`` (the default of every command) picks
bfloat16 only where it is actually faster than float32.

- CUDA: bfloat16 where the GPU supports it, else float32.
- CPU: bfloat16 only when the CPU has native bf16 instructions (``avx512_bf16`` or ``amx_bf16`` in
  ``/proc/cpuinfo``, or ``torch.backends.cpu.get_cpu_capability()`` reporting AMX) *and* a one-off
  micro-benchmark (a [2048 x 576] @ [576 x 4608] matmul, the SAE encoder of the embedded model)
  confirms it beats float32. The result is cached in ``$SAESCOPE_HOME/precision.json`` per
  (CPU, torch version, thread count). On AVX2-only CPUs bf16 matmuls are 10-90x slower than fp32,
  so they get float32 without a benchmark.
- anything else (MPS, XPU): float32.
- ``$SAESCOPE_AUTO_DTYPE`` (``float32``, ``bfloat16`` or ``float16``) forces what ``auto`` picks for bulk
  work on any device, so any machine can run the paths another CPU would take (the tests use it).

**Two purposes, one rule** (``resolve_dtype(..., purpose=...)``):

- ``"bulk"`` passes (activation caching, feature extraction, SAE training, generation, steering, the
  app, ``serve-llm``): ``auto`` is the fastest precision above. Their outputs are averages over many
  tokens, which bfloat16 keeps.
- ``"measure"`` (scores that compare small probability differences, and choices made at thresholds:
  ``bias eval``, ``bias features``, ``debias`` (its statistics, selection and verdicts), ``circuit
  find``/``eval``/``patch`` (attribution, patching, faithfulness), ``edit`` edits and scores, ``shift
  run``, ``sae eval``'s CE/KL): ``auto`` is **float32 on every device**. bfloat16 keeps 8 bits of
  mantissa, so a log-probability near -30 is off by ~0.1 and p(she) by ~1e-3, and a feature near a
  threshold can cross it (debias in bfloat16 chose 43 gate features where float32 chose 44, and another
  layer). An explicit ``--dtype bfloat16`` is honoured and recorded, so the difference can be measured
  (README, "Precision"; docs/results/precision.md).

Every JSON a command writes carries ``precision_record(...)``: the dtype, the purpose and this rule.

``saescope info`` prints the choice and why (``precision_report``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch

from saescope.errors import SaescopeError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
CHOICES = ("auto", "float32", "bfloat16", "float16")
AUTO_VARIABLE = "SAESCOPE_AUTO_DTYPE"
BULK, MEASURE = "bulk", "measure"
RULES = {BULK: "bulk pass: auto = the fastest precision of the device (bfloat16 only where it is faster)",
         MEASURE: "measurement: auto = float32 on every device (bfloat16 only when asked for)"}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> ``torch.bfloat16``; ``None``/``"auto"`` -> ``None``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() == "auto":
        return None
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise SaescopeError(f"unknown dtype {dtype!r}: use one of {', '.join(CHOICES)}") from None


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu",
                  purpose: str = BULK) -> torch.dtype:
    """The dtype to run in: the one asked for; for ``"auto"``/``None``, float32 when ``purpose`` is
    ``"measure"``, else the fastest safe one on ``device``."""
    if purpose not in RULES:
        raise ValueError(f"purpose must be {BULK!r} or {MEASURE!r}, got {purpose!r}")
    explicit = parse_dtype(dtype)
    if explicit is not None:
        return explicit
    return torch.float32 if purpose == MEASURE else auto_dtype(device)


def precision_record(dtype: torch.dtype | str, purpose: str = MEASURE) -> dict[str, str]:
    """What a command's JSON says of its precision: ``{"dtype", "purpose", "rule"}``."""
    name = dtype_name(dtype) if isinstance(dtype, torch.dtype) else str(dtype)
    return {"dtype": name, "purpose": purpose, "rule": RULES[purpose]}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def auto_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """What ``auto`` picks for bulk work on ``device`` (``$SAESCOPE_AUTO_DTYPE`` wins when set)."""
    forced = forced_auto()
    return forced if forced is not None else DTYPES[_device_report(torch.device(device))["choice"]]


def forced_auto() -> torch.dtype | None:
    """The dtype ``$SAESCOPE_AUTO_DTYPE`` forces ``auto`` to, or ``None`` when it is unset."""
    value = os.environ.get(AUTO_VARIABLE, "").strip()
    if not value:
        return None
    forced = parse_dtype(value)
    if forced is None:
        raise SaescopeError(f"${AUTO_VARIABLE}={value!r}: name a dtype ({', '.join(CHOICES[1:])}), not auto")
    return forced


def cpu_bf16_flags() -> list[str]:
    """The native-bf16 flags of this CPU (``avx512_bf16``, ``amx_bf16``) found in /proc/cpuinfo."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        words = set()
    return sorted(words & {"avx512_bf16", "amx_bf16"})


def cpu_capability() -> str:
    """PyTorch's view of the CPU's vector units (``AVX2``, ``AVX512``, ...) plus its bf16 flags."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_bf16_flags()
    return capability + (f"+{'+'.join(flags)}" if flags else "")


def precision_report(device: str | torch.device = "cpu") -> dict[str, Any]:
    """``{"device", "choice", "reason", "capability", ...}``: what ``auto`` picks on ``device`` and why."""
    device = torch.device(device)
    forced = forced_auto()
    if forced is not None:
        return {"device": str(device), "choice": dtype_name(forced), "reason": f"forced by ${AUTO_VARIABLE}",
                "capability": cpu_capability() if device.type == "cpu" else device.type}
    return _device_report(device)


@cache
def _device_report(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return {"device": str(device), "choice": "bfloat16" if ok else "float32",
                "reason": "the GPU supports bfloat16" if ok else "the GPU has no bfloat16 support",
                "capability": torch.cuda.get_device_name(device)}
    if device.type != "cpu":
        return {"device": str(device), "choice": "float32", "reason": f"{device.type}: float32 by default",
                "capability": device.type}
    capability = cpu_capability()
    native = bool(cpu_bf16_flags()) or "AMX" in torch.backends.cpu.get_cpu_capability()
    if not native:
        return {"device": "cpu", "choice": "float32", "capability": capability,
                "reason": "the CPU has no native bfloat16 (no avx512_bf16/amx_bf16): bf16 matmuls are emulated"}
    timing = _cached_cpu_benchmark()
    faster = timing["bfloat16_s"] < 0.9 * timing["float32_s"]
    return {"device": "cpu", "choice": "bfloat16" if faster else "float32", "capability": capability,
            "reason": (f"native bfloat16, measured {timing['float32_s'] / timing['bfloat16_s']:.2f}x the float32 "
                       f"matmul speed" + ("" if faster else ": not faster, so float32")), **timing}


def _cpu_key() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}|{','.join(cpu_bf16_flags())}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def _cached_cpu_benchmark() -> dict[str, float]:
    from saescope.storage import saescope_home, write_json

    path = saescope_home() / "precision.json"
    key = _cpu_key()
    try:
        cached = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        cached = None
    if cached:
        return cached
    timing = matmul_seconds()
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, {**(known if isinstance(known, dict) else {}), key: timing})
    except (OSError, ValueError, SaescopeError):
        pass  # an unwritable cache only costs the benchmark again next time
    return timing


def matmul_seconds(rows: int = 2048, inner: int = 576, cols: int = 4608, repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds of a [rows x inner] @ [inner x cols] matmul in float32 and bfloat16."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, inner, generator=gen), torch.randn(inner, cols, generator=gen)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x[:64] @ y  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            x @ y
            best = min(best, time.perf_counter() - start)
            if best > 2.0:  # emulated bf16: one run says enough
                break
        out[f"{dtype_name(dtype)}_s"] = float(f"{best:.3g}")  # 3 significant digits: a tiny matmul takes microseconds
    return out
