"""What every benchmark prints beside its figures: the precision and the CPU it ran with."""

from __future__ import annotations

import torch

from saescope.precision import cpu_capability, dtype_name, resolve_dtype


def machine(dtype: str | torch.dtype = "auto", device: str = "cpu") -> str:
    """``dtype=<name> cpu=<capability>`` for the end of a benchmark line (``auto`` resolved here)."""
    resolved = resolve_dtype(dtype, device) if not isinstance(dtype, torch.dtype) else dtype
    return f"dtype={dtype_name(resolved)} cpu={cpu_capability()}"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_saescope_server(args: list[str], probe_url: str):
    """Start ``saescope <args>`` as a subprocess and wait (up to 2 min) until ``probe_url`` answers."""
    import subprocess
    import sys
    import time

    import httpx

    process = subprocess.Popen([sys.executable, "-m", "saescope.cli.main", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    for _ in range(240):
        try:
            httpx.get(probe_url, timeout=2)
            return process
        except httpx.HTTPError:
            if process.poll() is not None:
                raise SystemExit(f"saescope {args[0]} failed: " + process.stderr.read()) from None
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"saescope {args[0]} did not start")
