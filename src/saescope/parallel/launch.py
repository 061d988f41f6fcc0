"""``--workers N``: re-run the same command under ``torchrun`` with N processes on this machine.

The command line is passed on unchanged except ``--workers``; ``torchrun --standalone`` picks a free
rendezvous port on the loopback interface. When a worker fails, ``torchrun`` stops the others; the
error names the exit code and how to resume. For several machines call ``torchrun`` yourself
(docs/guides/parallel.md).
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


TORCHRUN_LOG = re.compile(r"^(\[?[WIE]\d{4} \d|WARNING:torch|\*{5,}|Setting OMP_NUM_THREADS|\s*warnings\.warn)")
FAILURE_REPORT = re.compile(r"^(\S+ FAILED|\[\d+\]:|Failures:|Root Cause.*|-{5,}|={5,}|\s+(exitcode|error_file|traceback|host|"
                            r"rank|time|local_rank)\s*:.*|\s*<NO_OTHER_FAILURES>)\s*$")
RANK_PREFIX = re.compile(r"^\[rank\d+\]: ?")
ERROR_LINE = re.compile(r"^error: ")
SIGNAL = re.compile(r"Signal (\d+) \((SIG\w+)\) received by PID")
TRACEBACK = "Traceback (most recent call last):"


class WorkerOutput:
    """The workers' stderr as one process would print it.

    - torchrun's own log lines and its failure report (``ChildFailedError``) are dropped;
    - a one-line ``error: ...`` that several ranks print is shown once;
    - a traceback (also one that torch prints as ``[rankN]: ...`` lines, or that starts after a progress
      bar's carriage return) is held back: when a worker printed its ``error:`` line, or a peer was killed,
      the other ranks' tracebacks (a collective whose peer left) are noise and are dropped; otherwise
      (a real bug) the last one is shown when the run ends.
    Everything else (progress bars, warnings) passes through as it comes.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.signal: str | None = None
        self.traceback: list[str] = []
        self._held: list[str] = []

    def feed(self, lines: Iterable[str]) -> Iterator[str]:
        for raw in lines:
            match = SIGNAL.search(raw)
            if match:
                self.signal = f"signal {match.group(1)} ({match.group(2)})"
            before, found, after = raw.partition(TRACEBACK)
            if found:
                before = RANK_PREFIX.sub("", before.split("[rank")[0] if "[rank" in before else before)
                if before.strip():
                    yield before.rstrip("\n") + "\n"
                self._close()
                self._held = [TRACEBACK + after]
                continue
            line = RANK_PREFIX.sub("", raw)
            if self._held:
                if line.startswith((" ", "\t")) or not line.strip():
                    self._held.append(line)
                    continue
                self._held.append(line)  # the exception line ends the traceback
                self._close()
                continue
            if ERROR_LINE.match(line):
                if line not in self.errors:
                    self.errors.append(line)
                    yield line
            elif not TORCHRUN_LOG.match(line) and not FAILURE_REPORT.match(line):
                yield line

    def _close(self) -> None:
        if self._held and not any("ChildFailedError" in line for line in self._held):
            self.traceback = self._held
        self._held = []

    def leftover(self) -> list[str]:
        """What is still to show when the run has ended (a real bug's traceback)."""
        self._close()
        return [] if self.errors or self.signal else self.traceback


def run_under_torchrun(workers: int, argv: list[str] | None = None) -> None:
    """Run ``saescope ARGV`` (default: this process's arguments) as ``workers`` processes; returns when
    all have finished, raises ``SaescopeError`` when one failed (with an empty message when the workers
    already printed theirs, so the error is shown once)."""
    if workers < 1:
        raise SaescopeError(f"--workers must be at least 1, got {workers}")
    if os.environ.get("WORLD_SIZE"):
        raise SaescopeError("--workers cannot be used inside torchrun: torchrun already chose the processes")
    args = without_workers_option(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
               "-m", "saescope.cli.main", *args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                                                        // workers))),
           "TORCHELASTIC_ERROR_FILE": os.devnull, "LOGLEVEL": os.environ.get("LOGLEVEL", "ERROR")}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    assert process.stderr is not None
    output = WorkerOutput()
    for line in output.feed(process.stderr):
        sys.stderr.write(line)
    code = process.wait()
    sys.stderr.writelines(output.leftover())
    if code == 0:
        return
    if output.errors:
        raise SaescopeError("", exit_code=2)  # the workers' one line is above: nothing to add
    if code == 130 or output.signal == "signal 2 (SIGINT)":
        raise SaescopeError("interrupted: every worker saved its checkpoint; resume with the same --workers and --resume",
                            exit_code=130)
    killed = f"a worker was killed ({output.signal})" if output.signal else f"a worker failed (torchrun exit code {code})"
    raise SaescopeError(f"{killed}: what it had saved is in its checkpoint; resume with the same --workers {workers} "
                        "and --resume")
