"""A forward pass that never returns stops its process, rather than wedging it for good.

A pass runs inside the model runtime's native code, which Python cannot interrupt. If it
never returns (as twice in this project's test runs on a loaded machine, each time with two
OpenVINO streams in one process; the cause was not found), the process stays up and
looks alive while its admission slot is held for ever: a server worker answers its health
check but queues every removal behind the stuck one, a job worker keeps renewing the item's
lease so no other worker takes it, and ``cutout remove`` never ends. A stuck native call may
also hold the GIL, and then no Python thread runs at all.

So the process arms CPython's :mod:`faulthandler` timer, whose watchdog is a C thread that
needs no GIL: once any pass has run for ``CUTOUT_PASS_TIMEOUT`` seconds, it writes every
thread's stack to stderr and ends the process with status 1. Whatever supervises the process
then does what it does with a crashed one: gunicorn starts a new worker, Kubernetes restarts
the pod, the job's lease runs out and another worker takes the item, the shell sees
``cutout remove`` fail.

The deadline is the *oldest* pass in flight plus the limit, not the last sign of progress:
with two slots, one stuck pass would otherwise hide behind the other slot's passes.
"""

from __future__ import annotations

import faulthandler
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class PassWatchdog:
    """Ends the process when a forward pass outlives :attr:`limit` seconds (0: never).

    :mod:`faulthandler` has one timer per process, so there is one instance
    (:data:`WATCHDOG`); the last :meth:`set_limit` wins.
    """

    def __init__(self) -> None:
        self.limit = 0.0
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._ids = itertools.count()
        self._armed = False  # the timer is ours to cancel only when we set it

    def set_limit(self, seconds: float) -> None:
        with self._lock:
            self.limit = max(0.0, seconds)
            self._rearm()

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Run the block as one forward pass under the deadline."""
        with self._lock:
            token = next(self._ids)
            self._started[token] = time.monotonic()
            self._rearm()
        try:
            yield
        finally:
            with self._lock:
                del self._started[token]
                self._rearm()

    def _rearm(self) -> None:
        """Point the timer at the oldest pass in flight (caller holds the lock)."""
        stream = _stderr()
        if not self._started or not self.limit or stream is None:
            if self._armed:
                faulthandler.cancel_dump_traceback_later()
                self._armed = False
            return
        left = min(self._started.values()) + self.limit - time.monotonic()
        faulthandler.dump_traceback_later(max(left, 0.001), exit=True, file=stream)
        self._armed = True


def _stderr() -> TextIO | None:
    """The process's real stderr, which faulthandler writes to by file descriptor (a test
    runner's captured ``sys.stderr`` may have none); ``None`` when there is no such file."""
    stream = sys.__stderr__
    try:
        if stream is not None and stream.fileno() >= 0:
            return stream
    except (AttributeError, OSError, ValueError):
        pass
    return None


WATCHDOG = PassWatchdog()
