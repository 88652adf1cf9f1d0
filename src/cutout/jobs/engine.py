"""Where items run: this process's threads (the embedded default), and the reaper that
re-sends items whose worker died or whose message was lost, whatever the engine.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from cutout.errors import CutoutError
from cutout.jobs.runner import ItemRunner
from cutout.jobs.service import Dispatcher
from cutout.storage.jobs import JobStore

log = logging.getLogger(__name__)
#: How long stopping waits for a thread: enough for a store query, not for a whole removal.
JOIN_SECONDS = 5.0


def join_briefly(thread: threading.Thread) -> None:
    """Wait up to JOIN_SECONDS for a stopping *thread* (not when it is the caller itself)."""
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(JOIN_SECONDS)


class EmbeddedQueue:
    """A :class:`Dispatcher` whose items run on *concurrency* threads of this process.

    Nothing here survives the process; the store does: on start (and every few seconds) the
    :class:`Reaper` sends again whatever was queued or running when the process ended.
    """

    def __init__(self, runner: ItemRunner, concurrency: int) -> None:
        self._runner = runner
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"job-worker-{n}", daemon=True)
            for n in range(concurrency)
        ]
        self._timers: list[threading.Timer] = []
        self._stopped = False

    def start(self) -> EmbeddedQueue:
        for thread in self._threads:
            thread.start()
        return self

    def send(self, item_ids: list[str], delay: float = 0.0) -> None:
        if delay > 0:
            timer = threading.Timer(delay, self.send, args=(item_ids,))
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()
            return
        for item_id in item_ids:
            self._queue.put(item_id)

    def depth(self) -> int | None:
        return self._queue.qsize()

    def _work(self) -> None:
        while (item_id := self._queue.get()) is not None:
            try:
                outcome = self._runner.run(item_id)
            except Exception:  # a store outage: the reaper sends it again
                log.exception("job item %s failed to run", item_id)
                continue
            if outcome.kind == "retry" and not self._stopped:
                self.send([item_id], outcome.delay)

    def stop(self) -> None:
        self._stopped = True
        for timer in self._timers:
            timer.cancel()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:  # an item in flight may outlast this: its lease covers it
            join_briefly(thread)


#: An input photo no item names, this old, belongs to a submission that died before its job
#: was saved (a request cannot take a day); swept every ``HOUSEKEEP_EVERY`` seconds, with the
#: jobs past their retention.
ORPHAN_INPUT_AGE = 24 * 3600.0
HOUSEKEEP_EVERY = 3600.0


class Reaper:
    """Every *interval* seconds: re-send items whose lease expired (their worker died) and,
    when the queue is empty, queued items past their time (their message was lost: a broker
    flushed or restarted without its data). Safe in any number of processes at once: the
    store hands each due item to one caller. Every hour (and at its first tick) it also
    removes the input photos of submissions cut short by a crash, and the jobs that ended
    more than *retention* seconds ago (CUTOUT_JOB_RETENTION_DAYS)."""

    def __init__(
        self,
        jobs: JobStore,
        dispatcher: Dispatcher,
        lease: float,
        interval: float | None = None,
        on_tick: Callable[[], None] = lambda: None,
        retention: float = 0.0,
    ) -> None:
        self._jobs = jobs
        self._retention = retention  # seconds a finished job is kept; 0: forever
        self._dispatcher = dispatcher
        self._lease = lease
        self._interval = interval if interval is not None else max(1.0, lease / 3)
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-reaper", daemon=True)
        self._housekept_at = -HOUSEKEEP_EVERY

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        join_briefly(self._thread)

    def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # never let the reaper die: log and go on
                log.exception("job reaper")
            if self._stop.wait(self._interval):
                return

    def tick(self) -> list[str]:
        self._on_tick()
        if time.monotonic() - self._housekept_at >= HOUSEKEEP_EVERY:
            self._housekept_at = time.monotonic()
            self.housekeep()
        try:
            depth = self._dispatcher.depth()
        except Exception as exc:  # the broker is down: wait for it
            log.info("job queue unreachable: %s", exc)
            return []
        try:
            due = self._jobs.due(time.time(), self._lease, queued_too=depth == 0)
        except CutoutError as exc:
            log.warning("job reaper: %s", exc)
            return []
        if due:
            log.info("re-sending %d job items", len(due))
            self._dispatcher.send(due)
        return due

    def housekeep(self) -> None:
        """Remove orphaned input photos (:data:`ORPHAN_INPUT_AGE`) and, with a retention, the
        jobs that ended longer ago; errors are logged, never raised."""
        now = time.time()
        _counted(
            "job photo sweep",
            "removed %d photos of job submissions cut short",
            lambda: self._jobs.sweep_inputs(now - ORPHAN_INPUT_AGE),
        )
        if self._retention:
            _counted(
                "job retention",
                "removed %d jobs past their retention",
                lambda: self._jobs.purge_finished(now - self._retention),
            )


def _counted(what: str, done: str, work: Callable[[], int]) -> None:
    """Run *work*, which removes things and says how many: a count is logged with *done*, a
    storage error as a warning naming *what* (the next round retries)."""
    try:
        count = work()
    except CutoutError as exc:
        log.warning("%s: %s", what, exc)
        return
    if count:
        log.info(done, count)
