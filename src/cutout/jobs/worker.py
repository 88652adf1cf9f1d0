"""``cutout worker``: a process that runs job items from the Redis queue (Celery).

The same engine, store and rules as the web (it builds them from the same settings), plus a
reaper thread that re-sends items whose worker died, and an announcement in Redis that the
web's ``/metrics`` counts as a live worker.
"""

from __future__ import annotations

import logging
import os
import socket

from cutout.apikeys import KeyService
from cutout.config import Settings
from cutout.errors import ConfigError
from cutout.jobs import build_runner
from cutout.jobs.broker import QUEUE, CeleryDispatcher, install, make_celery
from cutout.jobs.engine import Reaper
from cutout.logs import configure_logging
from cutout.storage import open_job_store, open_key_store, open_store

log = logging.getLogger(__name__)


def run(settings: Settings, concurrency: int | None = None) -> None:
    """Work until stopped (SIGTERM/Ctrl+C: the item running is finished first)."""
    if not settings.queue_url:
        raise ConfigError(
            "cutout worker needs CUTOUT_QUEUE_URL (e.g. redis://127.0.0.1:6379/0): without a "
            "queue, the web process runs the jobs itself."
        )
    from cutout import metrics
    from cutout.app import build_service, memory_budget, start_engine

    configure_logging(settings.log_level, json_logs=settings.json_logs)
    store = metrics.MeteredStore(open_store(settings))
    budget = memory_budget(settings, processes=1)
    service = build_service(settings, store, start_engine(settings), budget)
    runner = build_runner(settings, service, KeyService(open_key_store(store)))
    celery = make_celery(settings.queue_url)
    dispatcher = CeleryDispatcher(celery, settings.queue_url)
    install(runner, dispatcher)
    lease = settings.job_lease_seconds
    Reaper(
        open_job_store(store),
        dispatcher,
        lease,
        on_tick=lambda: dispatcher.announce(lease),
        retention=settings.job_retention_seconds,
    ).start()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, settings.metrics_host)
    n = concurrency or settings.worker_concurrency
    name = f"cutout@{socket.gethostname()}-{os.getpid()}"
    log.info("worker %s: %d at a time from %s", name, n, QUEUE)
    celery.worker_main(
        [
            "worker",
            f"--pool={'threads' if n > 1 else 'solo'}",
            f"--concurrency={n}",
            f"--queues={QUEUE}",
            f"--hostname={name}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
