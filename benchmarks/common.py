"""What every benchmark shares: the precision and CPU printed beside its figures, and ``--smoke``."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from saescope.precision import cpu_capability, dtype_name, resolve_dtype


def machine(dtype: str | torch.dtype = "auto", device: str = "cpu") -> str:
    """``dtype=<name> cpu=<capability>`` for the end of a benchmark line (``auto`` resolved here)."""
    resolved = resolve_dtype(dtype, device) if not isinstance(dtype, torch.dtype) else dtype
    return f"dtype={dtype_name(resolved)} cpu={cpu_capability()}"


def threads() -> int:
    """Torch threads of a benchmark: 2 (the machines the figures are for), or ``OMP_NUM_THREADS`` when set
    (the smoke tests run two benchmarks at once with one thread each: four threads on two cores would
    make both many times slower)."""
    return int(os.environ.get("OMP_NUM_THREADS") or 2)


def parse_args(parser: argparse.ArgumentParser, smoke: dict[str, Any]) -> argparse.Namespace:
    """Parse the command line; with ``--smoke`` the settings in ``smoke`` replace the others, so the script
    runs in seconds and prints every line it prints in full (``tests/test_benchmarks.py`` runs each one
    so: a refactor cannot break a benchmark silently). A smoke run's figures mean nothing."""
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, tiny sizes: check the script runs and prints its lines (figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        for name, value in smoke.items():
            setattr(args, name, value)
    return args


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
