"""The one thread that runs model work for the app, behind a bounded queue (the event loop never blocks)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Busy(Exception):
    """The queue is full: answer 503."""


class JobQueue:
    """Runs submitted callables one at a time on its own thread. Example::

        jobs = JobQueue(maxsize=4)
        future = jobs.submit(lambda: 1 + 1)    # raises Busy when 4 jobs already wait
    """

    def __init__(self, maxsize: int) -> None:
        self.queue: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue(maxsize=maxsize)
        threading.Thread(target=self._run, name="saescope-app-model", daemon=True).start()

    def submit(self, job: Callable[[], Any]) -> Future:
        future: Future = Future()
        try:
            self.queue.put_nowait((job, future))
        except queue.Full:
            raise Busy from None
        return future

    def _run(self) -> None:
        while True:
            job, future = self.queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - the job's error goes to its caller, the thread lives on
                future.set_exception(exc)
