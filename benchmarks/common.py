"""What every benchmark prints beside its figures: the precision and the CPU it ran with."""

from __future__ import annotations

import torch

from saescope.precision import cpu_capability, dtype_name, resolve_dtype


def machine(dtype: str | torch.dtype = "auto", device: str = "cpu") -> str:
    """``dtype=<name> cpu=<capability>`` for the end of a benchmark line (``auto`` resolved here)."""
    resolved = resolve_dtype(dtype, device) if not isinstance(dtype, torch.dtype) else dtype
    return f"dtype={dtype_name(resolved)} cpu={cpu_capability()}"
