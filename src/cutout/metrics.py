"""Prometheus metrics, with the official client, correct under several gunicorn workers.

Each gunicorn worker records into its own files under ``PROMETHEUS_MULTIPROC_DIR`` (the
client's multiprocess mode; :mod:`cutout.gunicorn_config` creates the folder before the
workers fork and marks dead workers), and the master serves their sum on a port of its own,
``CUTOUT_METRICS_PORT`` (9464) on ``CUTOUT_METRICS_HOST`` (127.0.0.1: not reachable from
outside unless you say so). The app's own port never answers ``/metrics``. Outside gunicorn
(tests, ``flask run``) the same metrics live in the process's default registry.

What is measured (all names start with ``cutout_``):

* ``http_requests_total{method,route,status}``, ``http_request_duration_seconds{method,route}``
  (route is the URL rule, e.g. ``/images/<string:record_id>/<string:kind>``, or ``unmatched``);
* ``removal_stage_seconds{stage}``: decode, model, refine, encode (``cutout.pipeline`` hooks);
* ``admission_waiting`` (queue depth), ``admission_active``, ``admission_wait_seconds``,
  ``admission_refused_total{reason}`` (``queue_full``, ``timeout``: 503 busy; ``too_large``:
  413), ``memory_reserved_bytes`` and ``memory_budget_bytes``;
* ``stored_bytes_total{kind}``, ``store_errors_total{operation}``, ``orphan_files_swept_total``;
* ``errors_total{code}``: every error answered, by our error code;
* ``model_load_seconds`` (one sample per worker);
* batch jobs: ``job_queue_depth``, ``job_items{state}``, ``job_workers`` (refreshed every few
  seconds by the web process) and ``job_item_seconds{outcome}`` (recorded where items run:
  ``cutout worker`` serves its own ``/metrics`` on ``CUTOUT_METRICS_PORT``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask, Response, request
from prometheus_client import Counter, Gauge, Histogram

from cutout.errors import StorageError
from cutout.storage.base import ImageInfo, ImageStore, Kind, NewImage, NewRecord, Record, Thumbnail

#: The methods counted by name; any other is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)

REQUESTS = Counter(
    "cutout_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "cutout_http_request_duration_seconds",
    "Time to answer an HTTP request, seconds.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
STAGES = Histogram(
    "cutout_removal_stage_seconds",
    "Time spent in each stage of a background removal, seconds.",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
WAITING = Gauge(
    "cutout_admission_waiting", "Requests waiting for admission.", multiprocess_mode="livesum"
)
ACTIVE = Gauge(
    "cutout_admission_active", "Removals admitted and running.", multiprocess_mode="livesum"
)
RESERVED = Gauge(
    "cutout_memory_reserved_bytes",
    "Estimated memory reserved by the removals running now.",
    multiprocess_mode="livesum",
)
BUDGET = Gauge(
    "cutout_memory_budget_bytes",
    "Memory budget for removals (CUTOUT_MEMORY_BUDGET_MB), summed over workers.",
    multiprocess_mode="livesum",
)
WAIT = Histogram(
    "cutout_admission_wait_seconds",
    "Time a removal waited for admission, seconds.",
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
REFUSED = Counter(
    "cutout_admission_refused_total",
    "Removals refused by admission: queue_full or timeout (503 busy), too_large (413).",
    ["reason"],
)
STORED = Counter("cutout_stored_bytes_total", "Image bytes written to the store.", ["kind"])
STORE_ERRORS = Counter("cutout_store_errors_total", "Store operations that failed.", ["operation"])
SWEPT = Counter(
    "cutout_orphan_files_swept_total", "Files of interrupted uploads removed by the sweep."
)
ERRORS = Counter("cutout_errors_total", "Errors answered, by error code.", ["code"])
MODEL_LOAD = Gauge(
    "cutout_model_load_seconds",
    "Seconds this worker took to load and compile the model.",
    multiprocess_mode="liveall",
)


JOB_QUEUE = Gauge(
    "cutout_job_queue_depth",
    "Job items waiting in the queue (Redis list, or the web process's own queue).",
    multiprocess_mode="max",
)
JOB_ITEMS = Gauge(
    "cutout_job_items", "Job items by state, all jobs.", ["state"], multiprocess_mode="max"
)
JOB_WORKERS = Gauge(
    "cutout_job_workers",
    "Live `cutout worker` processes (or threads of the web process running items).",
    multiprocess_mode="max",
)
JOB_ITEM_SECONDS = Histogram(
    "cutout_job_item_seconds",
    "Time one job item took to run, seconds, by outcome (done, failed, retry).",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)


class AdmissionMetrics:
    """:class:`~cutout.engine.base.AdmissionObserver` that records into the gauges above."""

    def admitted(self, waited: float) -> None:
        WAIT.observe(waited)

    def refused(self, reason: str) -> None:
        REFUSED.labels(reason).inc()

    def changed(self, *, active: int, waiting: int, reserved: int) -> None:
        ACTIVE.set(active)
        WAITING.set(waiting)
        RESERVED.set(reserved)


def observe_stage(stage: str, seconds: float) -> None:
    STAGES.labels(stage).observe(seconds)


def observe_error(code: str) -> None:
    ERRORS.labels(code).inc()


def init_app(app: Flask, *, budget: int) -> None:
    """Time and count every request by route and status."""
    BUDGET.set(budget)
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count)


def _start_timer() -> None:
    request.environ.setdefault("cutout.started", time.perf_counter())


def _count(response: Response) -> Response:
    # Every label comes from a closed set: the route is a URL rule of ours (never the path a
    # client sent), the method one of HTTP's (any other string a client sends is "other"),
    # the status a number the app chose. Otherwise each new value would be a new series:
    # 200 requests with made-up methods grew /metrics from 148 to 3,803 series.
    rule = request.url_rule
    route = rule.rule if rule is not None else "unmatched"
    method = request.method if request.method in METHODS else "other"
    REQUESTS.labels(method, route, str(response.status_code)).inc()
    started = request.environ.get("cutout.started")
    if started is not None:
        LATENCY.labels(method, route).observe(time.perf_counter() - started)
    return response


class MeteredStore:
    """An :class:`ImageStore` that counts the bytes it stores and the operations that fail."""

    def __init__(self, inner: ImageStore) -> None:
        self.inner = inner
        self.on_close: list[Callable[[], None]] = []  # e.g. stop the sweeper of this store

    def add(self, record: NewRecord, *, limit: int, record_id: str | None = None) -> Record:
        with _counted("add"):
            stored = self.inner.add(record, limit=limit, record_id=record_id)
        STORED.labels("original").inc(len(record.original.data))
        STORED.labels("processed").inc(len(record.processed.data))
        return stored

    def count(self, user_id: str) -> int:
        with _counted("count"):
            return self.inner.count(user_id)

    def list(self, user_id: str) -> list[Record]:
        with _counted("list"):
            return self.inner.list(user_id)

    def get(self, user_id: str, record_id: str) -> Record:
        with _counted("get"):
            return self.inner.get(user_id, record_id)

    def rename(self, user_id: str, record_id: str, image_name: str) -> Record:
        with _counted("rename"):
            return self.inner.rename(user_id, record_id, image_name)

    def delete(self, user_id: str, record_id: str) -> None:
        with _counted("delete"):
            self.inner.delete(user_id, record_id)

    def read_image(self, user_id: str, record_id: str, kind: Kind) -> tuple[ImageInfo, bytes]:
        with _counted("read_image"):
            return self.inner.read_image(user_id, record_id, kind)

    def save_edit(self, user_id: str, record_id: str, processed: NewImage | None) -> Record:
        with _counted("save_edit"):
            saved = self.inner.save_edit(user_id, record_id, processed)
        if processed is not None:
            STORED.labels("edit").inc(len(processed.data))
        return saved

    def save_thumbnail(self, user_id: str, record_id: str, kind: Kind, thumb: Thumbnail) -> None:
        with _counted("save_thumbnail"):
            self.inner.save_thumbnail(user_id, record_id, kind, thumb)
        STORED.labels("thumbnail").inc(len(thumb.data))

    def read_thumbnail(self, user_id: str, record_id: str, kind: Kind) -> Thumbnail | None:
        with _counted("read_thumbnail"):
            return self.inner.read_thumbnail(user_id, record_id, kind)

    def ping(self) -> None:
        with _counted("ping"):
            self.inner.ping()

    def sweep(self) -> int:
        with _counted("sweep"):
            removed = self.inner.sweep()
        SWEPT.inc(removed)
        return removed

    def close(self) -> None:
        for stop in self.on_close:
            stop()
        self.inner.close()


@contextmanager
def _counted(operation: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        STORE_ERRORS.labels(operation).inc()
        raise
