"""``--workers``' view of its workers' stderr: one error line, no launcher noise, a real bug's traceback kept."""

from __future__ import annotations

from saescope.parallel.launch import WorkerOutput

REPORT = ["saescope.cli.main FAILED\n", "------------------------------------------------------------\n", "Failures:\n",
          "[1]:\n", "  time      : 2026-12-06_03:30:00\n", "  exitcode  : -9 (pid: 1234)\n", "[0]:\n",
          "  error_file: <N/A>\n", "Root Cause (first observed failure):\n",
          "W1206 03:30:00.000000 77 torch/distributed/elastic/multiprocessing/api.py:900] Sending process 12 SIGTERM\n"]


def test_one_error_line_for_the_same_error_of_every_rank():
    output = WorkerOutput()
    shown = list(output.feed(["error: bad hook\n", "error: bad hook\n", *REPORT]))
    assert shown == ["error: bad hook\n"] and output.leftover() == []


def test_a_killed_peer_hides_the_survivors_traceback_but_keeps_the_progress_bar():
    output = WorkerOutput()
    lines = ["step 3/10\rstep 4/10[rank0]: Traceback (most recent call last):\n", "[rank0]:   File \"x.py\", line 1\n",
             "[rank0]: RuntimeError: Connection closed by peer\n", *REPORT,
             "  traceback : Signal 9 (SIGKILL) received by PID 1234\n"]
    shown = list(output.feed(lines))
    assert shown == ["step 3/10\rstep 4/10\n"] and output.signal == "signal 9 (SIGKILL)" and output.leftover() == []


def test_a_real_bug_keeps_its_traceback():
    output = WorkerOutput()
    bug = ["Traceback (most recent call last):\n", '  File "y.py", line 2, in f\n', "ZeroDivisionError: division by zero\n"]
    assert list(output.feed([*bug, *bug, *REPORT])) == []
    assert output.leftover() == bug
