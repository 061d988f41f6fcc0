"""Ctrl-C during a long job: stop at the next safe point instead of in the middle of an update.

Inside ``deferred_interrupt()``, the first SIGINT only sets a flag; the job checks it between two
steps, saves its checkpoint and raises ``JobInterrupted`` (the CLI exits with 130). A second Ctrl-C
raises ``KeyboardInterrupt`` at once. Outside the main thread it does nothing (signals only reach it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Yield ``requested()``: True once the user pressed Ctrl-C. Example::

        with deferred_interrupt() as requested:
            for batch in batches:
                work(batch)
                if requested():
                    save(); raise JobInterrupted("...")
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    state = {"hits": 0}

    def handler(signum: int, frame: object) -> None:
        state["hits"] += 1
        if state["hits"] > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: state["hits"] > 0
    finally:
        signal.signal(signal.SIGINT, previous)
