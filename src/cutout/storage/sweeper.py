"""The periodic sweep: remove the images of uploads that died, while the server runs.

Every store sweeps once when first used; that alone left a crash's files in place until some
later restart. Each process (every gunicorn worker) now also runs :class:`Sweeper`, a daemon
thread that calls ``store.sweep()`` every ``CUTOUT_SWEEP_INTERVAL`` seconds. Several sweepers
at once are safe: the stores' sweeps never touch an add that is still alive (a file lock for
SQLite, a fenced lease for MongoDB; see their module docstrings), and deleting twice is a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from cutout.errors import CutoutError

log = logging.getLogger(__name__)


class Sweepable(Protocol):
    def sweep(self) -> int: ...


class Sweeper:
    """Call ``store.sweep()`` every *interval* seconds on a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        store: Sweepable,
        interval: float,
        *,
        on_swept: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._interval = interval
        self._on_swept = on_swept
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def sweep_once(self) -> int:
        """One sweep; errors are logged (the next round retries), never raised."""
        try:
            removed = self._store.sweep()
        except CutoutError as exc:
            log.warning("orphan sweep failed (next try in %gs): %s", self._interval, exc)
            return 0
        except Exception:  # a bug here must not kill the thread, or sweeping silently stops
            log.exception("orphan sweep failed")
            return 0
        if removed:
            log.info("orphan sweep removed %d files of interrupted uploads", removed)
        if self._on_swept:
            self._on_swept(removed)
        return removed

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.sweep_once()
