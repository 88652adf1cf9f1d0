"""gunicorn settings, read from the same environment as the app.

Used by the container (``gunicorn -c python:cutout.gunicorn_config 'cutout:create_app()'``) and by
``cutout serve``, so both run with identical settings. Threads, not processes, scale a worker:
each process holds its own copy of the model (~0.5 GB), while threads share it and the engine's
admission control bounds how many forward passes run at once.

Also here: our log formats for gunicorn's own lines (:class:`GunicornLogger`), and the metrics
of every worker, summed by the master on a port of its own (``CUTOUT_METRICS_PORT``, see
:mod:`cutout.metrics`).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from gunicorn.glogging import Logger

from cutout import logs
from cutout.config import Settings
from cutout.errors import CutoutError


def _fail(exc: CutoutError) -> NoReturn:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(3) from None


def _checked_settings() -> Settings:
    """The settings, with what would stop every worker checked once, here, in one line.

    Without this a malformed setting is a traceback from gunicorn's config loader, and a
    missing secret key or model is one traceback per worker before "Worker failed to boot".
    """
    try:
        settings = Settings.from_env()
    except CutoutError as exc:
        _fail(exc)
    # Before anything imports prometheus_client: it picks its storage when first imported, and
    # the workers (forked from here) must write to the shared folder.
    _multiprocess_metrics(settings)
    from cutout.app import secret_key, start_engine_check

    try:
        secret_key(settings)
        start_engine_check(settings)
    except CutoutError as exc:
        _fail(exc)
    return settings


def _multiprocess_metrics(settings: Settings) -> None:
    """Point prometheus_client's multiprocess mode at an empty folder (ours, or the one set in
    PROMETHEUS_MULTIPROC_DIR, emptied: files of a previous run would count again)."""
    global _metrics_dir_created
    if not settings.metrics_port:
        return
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        folder = tempfile.mkdtemp(prefix="cutout-metrics-")
        _metrics_dir_created = folder
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder


_metrics_dir_created: str | None = None
_settings = _checked_settings()

bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.web_workers
# gthread, with each request received whole by the event loop before a thread sees it: slow
# clients cannot hold the threads (cutout.front).
worker_class = "cutout.front.BufferingWorker"
threads = _settings.web_threads
timeout = _settings.web_timeout
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
# No preload: the app (MongoClient, model) must be created after fork, in each worker.
preload_app = False
# gunicorn's control socket (for `gunicornc`) would live under $HOME, which is read-only in
# the container; nothing here uses it.
control_socket_disable = True
# Uploads of several MB arrive as multipart bodies; keep gunicorn's header limits default.
# The request line may be up to gunicorn's maximum (8190 bytes, default 4094): the app refuses
# URLs over 4096 characters itself (cutout.web.request), with a JSON 414 for programs. Longer
# lines still get gunicorn's HTML error, before any of our code runs (see the README).
limit_request_line = 8190
# Forwarded headers are the app's business alone (ProxyFix, as CUTOUT_TRUSTED_PROXIES says).
# gunicorn's own defaults trusted X-Forwarded-Proto/-Ssl/-Protocol from 127.0.0.1, so any local
# client could claim HTTPS and get HSTS and Secure cookies with no proxy configured; and with
# "*" it would have trusted X-Forwarded-Ssl, which a proxy that sets only X-Forwarded-Proto
# passes through from the client untouched.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
# gunicorn's access line plus the request id the app echoed (text mode; JSON: GunicornLogger).
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
)


# -- metrics: every worker's, summed by the master -------------------------------------------


def when_ready(server: Any) -> None:
    """Serve the workers' metrics from the master, on their own address and port."""
    if not _settings.metrics_port:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    # The checks above imported the app, so this process made (empty) metric files of its
    # own; it records nothing, so drop them: only the workers' figures count.
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for own in Path(folder).glob(f"*_{os.getpid()}.db"):
        own.unlink()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    host, port = _settings.metrics_host, _settings.metrics_port
    address = f"http://{host}:{port}/metrics"
    try:
        start_http_server(port, host, registry=registry)
    except OSError as exc:  # the app can serve without its metrics; say so loudly
        if exc.errno == errno.EADDRINUSE and _settings.env == "development":
            # A second local instance (`make run` twice): any free port will do, so it works
            # without configuration. In production the port is what Prometheus scrapes.
            metrics, _ = start_http_server(0, host, registry=registry)
            server.log.warning(
                "metrics on http://%s:%s/metrics: port %s (CUTOUT_METRICS_PORT) is taken, "
                "perhaps by another cutout; set CUTOUT_METRICS_PORT to choose one (0 = off)",
                host,
                metrics.server_port,
                port,
            )
            return
        server.log.error(
            "metrics NOT served: cannot listen on %s (CUTOUT_METRICS_PORT=%s, "
            "CUTOUT_METRICS_HOST=%s): %s. Set CUTOUT_METRICS_PORT to a free port, or 0 for none.",
            address,
            port,
            host,
            exc.strerror or exc,
        )
        return
    server.log.info("metrics on %s", address)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's gauges (queue depth, running removals...) from the sums."""
    if _settings.metrics_port:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _metrics_dir_created:
        shutil.rmtree(_metrics_dir_created, ignore_errors=True)


# -- logs: our formats ------------------------------------------------------------------------


class GunicornLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's logger, with our formats: the access line carries the request id (text or
    JSON), and in JSON mode gunicorn's own messages are JSON objects too."""

    json_logs = False  # set below from the settings

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.addFilter(logs.RequestIdFilter())
                if self.json_logs:
                    handler.setFormatter(logs.JsonFormatter())

    def access(self, resp: Any, req: Any, environ: logs.Environ, request_time: Any) -> None:
        if not self.json_logs:
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        path = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "-")
        self.access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "request_id": environ.get("cutout.request_id"),
                "method": method,
                "path": path,
                "status": int(status) if status.isdigit() else status,
                "bytes": getattr(resp, "sent", None),
                "duration_ms": round(request_time.total_seconds() * 1000, 1),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
            },
        )


logger_class = GunicornLogger
GunicornLogger.json_logs = _settings.json_logs
