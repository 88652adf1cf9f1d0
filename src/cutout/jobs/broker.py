"""Celery on Redis: the engine when ``CUTOUT_QUEUE_URL`` is set (``cutout worker``).

A message carries only an item id; the store holds everything else. Tasks are acknowledged
late (after they ran) with a prefetch of one, so a worker that dies holds at most the item
it was running, and that item's lease in the store, not Celery's one-hour visibility timeout,
decides when it runs again (the :class:`~cutout.jobs.engine.Reaper` in every worker).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from celery import Celery

from cutout.jobs.runner import ItemRunner

log = logging.getLogger(__name__)

#: The Redis list the messages wait in (what a KEDA ScaledObject watches).
QUEUE = "cutout-jobs"
TASK = "cutout.run_item"
#: Live workers announce themselves under this prefix, with a time to live.
WORKER_KEY = "cutout:worker:"

_runner: ItemRunner | None = None  # this worker process's, set by `cutout worker`


def make_celery(url: str) -> Celery:
    app = Celery("cutout", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted Redis is waited for, forever
        # Publishing while Redis is down gives up quickly: the item stays queued in the store
        # and the reaper sends it once Redis is back.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        broker_transport_options={"visibility_timeout": 3600, "socket_timeout": 5},
    )
    app.task(name=TASK, ignore_result=True)(_run_item)
    return app


def _run_item(item_id: str) -> None:
    if _runner is None:
        raise RuntimeError("this process is not a cutout worker")
    outcome = _runner.run(item_id)
    if outcome.kind == "retry":
        _sender.send([item_id], outcome.delay)


class CeleryDispatcher:
    """Sends item ids to the Redis queue; reads its depth; counts live workers."""

    def __init__(self, app: Celery, url: str) -> None:
        import redis

        self._app = app
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def send(self, item_ids: list[str], delay: float = 0.0) -> None:
        options: dict[str, Any] = {"countdown": delay} if delay > 0 else {}
        for item_id in item_ids:
            try:
                self._app.send_task(TASK, args=[item_id], queue=QUEUE, **options)
            except Exception as exc:  # the reaper will send it when the broker is back
                log.warning("could not queue job item %s: %s", item_id, exc)
                return

    def depth(self) -> int | None:
        return int(self._redis.llen(QUEUE))

    def announce(self, ttl: float) -> None:
        """Say this worker is alive for *ttl* seconds (the metrics' worker count)."""
        name = f"{WORKER_KEY}{socket.gethostname()}:{os.getpid()}"
        try:
            self._redis.set(name, "1", px=int(ttl * 1000))
        except Exception as exc:
            log.info("could not announce the worker: %s", exc)

    def workers(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=WORKER_KEY + "*", count=1000))


_sender: CeleryDispatcher


def consume_in_thread(app: Celery, concurrency: int) -> Callable[[], None]:
    """Work on the queue from a thread of this process (the web, with CUTOUT_WEB_RUNS_JOBS
    and a queue); return the stopper."""
    import threading

    worker = app.WorkController(
        pool_cls="threads" if concurrency > 1 else "solo",
        concurrency=concurrency,
        queues=[QUEUE],
        hostname=f"web@{socket.gethostname()}-{os.getpid()}",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    threading.Thread(target=worker.start, name="job-consumer", daemon=True).start()
    return lambda: worker.stop(in_sighandler=False)


def install(runner: ItemRunner, sender: CeleryDispatcher) -> None:
    """Make this process a worker: tasks run on *runner*, retries go through *sender*."""
    global _runner, _sender
    _runner, _sender = runner, sender
