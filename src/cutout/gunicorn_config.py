"""gunicorn settings, read from the same environment as the app.

Used by the container (``gunicorn -c python:cutout.gunicorn_config 'cutout:create_app()'``) and by
``cutout serve``, so both run with identical settings. Threads, not processes, scale a worker:
each process holds its own copy of the model (~0.5 GB), while threads share it and the engine's
admission control bounds how many forward passes run at once.
"""

from __future__ import annotations

import sys

from cutout.config import Settings
from cutout.errors import CutoutError


def _checked_settings() -> Settings:
    """The settings, with what would stop every worker checked once, here, in one line.

    Without this a malformed setting is a traceback from gunicorn's config loader, and a
    missing secret key or model is one traceback per worker before "Worker failed to boot".
    """
    from cutout.app import secret_key, start_engine_check

    try:
        settings = Settings.from_env()
        secret_key(settings)
        start_engine_check(settings)
    except CutoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    return settings


_settings = _checked_settings()

bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.web_workers
worker_class = "gthread"
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
