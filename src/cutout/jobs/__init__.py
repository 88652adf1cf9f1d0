"""Batch jobs (issue 14): many photos as one job, run by workers apart from the web.

* :mod:`cutout.jobs.service`: submit, read, cancel, results zip (the API's side);
* :mod:`cutout.jobs.runner`: one item, idempotently (the workers' side);
* :mod:`cutout.jobs.engine`: the embedded engine (threads of the web process) and the reaper;
* :mod:`cutout.jobs.broker`: Celery on Redis, when ``CUTOUT_QUEUE_URL`` is set;
* :mod:`cutout.jobs.webhook`: the signed notification when a job ends.

(:mod:`cutout.batch` is something else: the CLI's local folder runner.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cutout import metrics
from cutout.apikeys import KeyService
from cutout.config import Settings
from cutout.jobs.engine import EmbeddedQueue, Reaper, join_briefly
from cutout.jobs.runner import ItemRunner, Outcome
from cutout.jobs.service import Dispatcher, JobService
from cutout.jobs.webhook import deliver_in_background
from cutout.service import ImageService
from cutout.storage import open_job_store
from cutout.storage.jobs import Job, JobStore

__all__ = ["JobService", "Jobs", "build_runner", "for_web", "job_json"]


@dataclass
class Jobs:
    """What a process holds of the job system; :meth:`close` stops its threads."""

    service: JobService
    store: JobStore
    dispatcher: Dispatcher
    workers: Callable[[], int | None]
    starts: list[Callable[[], Callable[[], None]]] = field(default_factory=list)
    stops: list[Callable[[], None]] = field(default_factory=list)
    _started: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Start the background threads, once. The app calls this on its first request, not
        when it is built: building an app touches no disk (tests build hundreds)."""
        if self._started:
            return
        with self._lock:
            if not self._started:
                self.stops += [start() for start in self.starts]
                self._started = True

    def close(self) -> None:
        """Stop the threads :meth:`start` started and wait for them (briefly: an item that is
        running goes on in its daemon thread; its lease lets another process take it)."""
        with self._lock:
            stops, self.stops = self.stops, []
        for stop in stops:
            stop()


def job_json(job: Job, eta: float | None = None) -> dict[str, Any]:
    """A job as the API shows it (links are paths under /api/v1)."""
    counts = job.counts
    return {
        "id": job.id,
        "status": job.status,
        "total": job.total,
        "queued": counts.queued,
        "running": counts.running,
        "succeeded": counts.done,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "options": job.options,
        "webhook_url": job.webhook_url,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "eta_seconds": eta,
        "links": {
            "self": f"/api/v1/jobs/{job.id}",
            "results": f"/api/v1/jobs/{job.id}/results.zip",
        },
    }


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_runner(settings: Settings, images: ImageService, keys: KeyService) -> ItemRunner:
    jobs = open_job_store(images.store)

    def job_done(job: Job) -> None:
        if job.webhook_url and job.webhook_secret:
            deliver_in_background(
                job.webhook_url,
                job_json(job, 0.0),
                job.webhook_secret,
                settings.fetch_policy,
                settings.webhook_retry_seconds,
            )

    def item_done(outcome: Outcome) -> None:
        metrics.JOB_ITEM_SECONDS.labels(outcome.kind).observe(outcome.seconds)

    return ItemRunner(
        jobs=jobs,
        images=images,
        keys=keys,
        lease=settings.job_lease_seconds,
        max_attempts=settings.job_max_attempts,
        png_compression=settings.png_compression,
        fetch_policy=settings.fetch_policy,
        on_job_done=job_done,
        on_item_done=item_done,
    )


def for_web(settings: Settings, images: ImageService, keys: KeyService) -> Jobs:
    """The web process's job system: sends items to Redis, or runs them on its own threads
    (``CUTOUT_WEB_RUNS_JOBS``, by default when there is no queue)."""
    store = open_job_store(images.store)
    keep = settings.job_retention_seconds  # how long a finished job is kept (0: forever)
    starts: list[Callable[[], Callable[[], None]]] = []
    dispatcher: Dispatcher
    workers: Callable[[], int | None]
    if settings.queue_url:
        from cutout.jobs.broker import CeleryDispatcher, consume_in_thread, install, make_celery

        app = make_celery(settings.queue_url)
        celery = CeleryDispatcher(app, settings.queue_url)
        dispatcher, workers = celery, celery.workers
        if settings.jobs_in_web:  # the web works too, as one more worker
            install(build_runner(settings, images, keys), celery)
            lease = settings.job_lease_seconds
            reaper = Reaper(
                store, celery, lease, on_tick=lambda: celery.announce(lease), retention=keep
            )
            starts.append(lambda: consume_in_thread(app, settings.worker_concurrency))
            starts.append(lambda: reaper.start().stop)
    else:
        runner = build_runner(settings, images, keys)
        embedded = EmbeddedQueue(runner, settings.worker_concurrency)
        dispatcher = embedded
        running = settings.worker_concurrency if settings.jobs_in_web else 0
        workers = lambda: running  # noqa: E731 - a constant, as the other engine's callable
        if settings.jobs_in_web:
            starts.append(lambda: embedded.start().stop)
            reaper = Reaper(store, embedded, settings.job_lease_seconds, retention=keep)
            starts.append(lambda: reaper.start().stop)
    service = JobService(
        jobs=store,
        images=images.store,
        dispatcher=dispatcher,
        max_items=settings.job_max_items,
        max_bytes=settings.job_max_bytes,
        lease=settings.job_lease_seconds,
    )
    built = Jobs(service, store, dispatcher, workers, starts)
    starts.append(lambda: _gauges(built))
    return built


def _gauges(jobs: Jobs, interval: float = 10.0) -> Callable[[], None]:
    """Refresh the queue's gauges every *interval* seconds; return the stopper."""
    stop = threading.Event()

    def refresh() -> None:
        while True:
            try:
                metrics.JOB_QUEUE.set(jobs.dispatcher.depth() or 0)
                counts = jobs.store.counts_by_state()
                for state in ("queued", "running", "done", "failed", "cancelled"):
                    metrics.JOB_ITEMS.labels(state).set(getattr(counts, state))
                metrics.JOB_WORKERS.set(jobs.workers() or 0)
            except Exception:
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=refresh, name="job-gauges", daemon=True)
    thread.start()

    def stopper() -> None:
        stop.set()
        join_briefly(thread)

    return stopper
