"""``--workers N``: re-run the same command under ``torchrun`` with N processes on this machine.

The command line is passed on unchanged except ``--workers``; ``torchrun --standalone`` picks a free
rendezvous port on the loopback interface. When a worker fails, ``torchrun`` stops the others; the
error names the exit code and how to resume. For several machines call ``torchrun`` yourself (README:
"Many processes and machines").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator

from saescope.errors import SaescopeError


def without_workers_option(argv: list[str]) -> list[str]:
    """``argv`` with ``--workers N`` / ``--workers=N`` removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


def without_launcher_traceback(lines: Iterable[str]) -> Iterator[str]:
    """The workers' stderr lines, without the traceback and failure report ``torchrun`` itself prints when a
    worker fails (its ``ChildFailedError``); any other traceback (a worker's bug) is kept."""
    held: list[str] = []
    dropping = False
    for line in lines:
        if dropping:
            continue
        if line.startswith("Traceback (most recent call last):") and not held:
            held.append(line)
            continue
        if held:
            held.append(line)
            if "ChildFailedError" in line:
                held, dropping = [], True
            elif re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line):
                yield from held
                held = []
            continue
        yield line
    yield from held


def run_under_torchrun(workers: int, argv: list[str] | None = None) -> None:
    """Run ``saescope ARGV`` (default: this process's arguments) as ``workers`` processes; returns when
    all have finished, raises ``SaescopeError`` when one failed."""
    if workers < 1:
        raise SaescopeError(f"--workers must be at least 1, got {workers}")
    if os.environ.get("WORLD_SIZE"):
        raise SaescopeError("--workers cannot be used inside torchrun: torchrun already chose the processes")
    args = without_workers_option(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
               "-m", "saescope.cli.main", *args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                                                        // workers)))}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    assert process.stderr is not None
    for line in without_launcher_traceback(process.stderr):
        sys.stderr.write(line)
    code = process.wait()
    if code == 130:
        raise SaescopeError("interrupted: every worker saved its checkpoint; resume with the same --workers and --resume")
    if code != 0:
        raise SaescopeError(f"a worker failed (torchrun exit code {code}; its message is above): "
                            f"resume with the same --workers {workers} and --resume")
