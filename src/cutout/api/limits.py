"""Rate limits with Flask-Limiter: per key (per address without one), on both API surfaces.

Counters live in this process's memory by default; with ``MONGO_URI`` they live in that
database (the ``limits`` library's MongoDB storage), so every replica shares them.
Every API response carries ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (a Unix time,
as remove.bg's); a 429 also carries ``Retry-After``, as remove.bg sends it, and only then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from flask_limiter import Limiter

from cutout.api.auth import is_api_request, rate_limit_key
from cutout.config import Settings

#: remove.bg's own cap for /v1.0/improve.
IMPROVE_LIMIT = "100/day"
WRITES = ["POST", "PUT", "PATCH", "DELETE"]
READS = ["GET", "HEAD"]


def init_app(app: Flask, blueprints: Iterable[Blueprint]) -> Limiter:
    settings: Settings = app.config["CUTOUT"]
    # Registered before the limiter's own hook, so it runs after it (Flask runs them reversed).
    app.after_request(_retry_after_only_when_refused)
    limiter = Limiter(
        rate_limit_key,
        app=app,
        storage_uri=settings.rate_limit_storage_uri,
        storage_options=storage_options(settings),
        headers_enabled=True,
        strategy="fixed-window",
        key_prefix="cutout",
        # Counters in the job queue's Redis: while it restarts, count in memory rather than
        # fail every API call (reading a job needs no Redis).
        in_memory_fallback_enabled=settings.rate_limit_storage_uri.startswith("redis"),
    )
    # One budget per key across every endpoint it can call (a scope shared by all of them),
    # and one for reads, deliberately larger: polling a job or listing images is cheap.
    writes = limiter.shared_limit(settings.api_rate_limit, scope="api", methods=WRITES)
    reads = limiter.shared_limit(settings.api_read_rate_limit, scope="api-read", methods=READS)
    for bp in blueprints:
        writes(bp)
        reads(bp)
    _limit_view(app, "removebg.improve", limiter.limit(IMPROVE_LIMIT, override_defaults=False))
    # Cookies cost nothing to mint: the page's key panel is limited per client address.
    per_address = limiter.limit(
        settings.key_creation_rate_limit, key_func=client_address, override_defaults=False
    )
    _limit_view(app, "keys.create_key", per_address)
    # The page's URL field makes the server download: limited per address like the APIs.
    from_url = limiter.limit(
        settings.url_rate_limit, key_func=client_address, override_defaults=False
    )
    _limit_view(app, "studio.create_from_url", from_url)
    app.extensions["cutout.limiter"] = limiter
    return limiter


def _limit_view(app: Flask, endpoint: str, limit: Any) -> None:
    app.view_functions[endpoint] = limit(app.view_functions[endpoint])


def client_address() -> str:
    return f"ip:{request.remote_addr or 'unknown'}"


def storage_options(settings: Settings) -> dict[str, Any]:
    """For MongoDB, the records' own database (one database to grant, back up and watch)."""
    uri = settings.rate_limit_storage_uri
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        return {}
    # Parsed by hand: pymongo's parser resolves mongodb+srv names, which is no job for start-up.
    path = uri.split("://", 1)[1].partition("/")[2]
    return {"database_name": path.partition("?")[0] or "cutout"}


def _retry_after_only_when_refused(response: Response) -> Response:
    """Flask-Limiter adds Retry-After to every limited response; keep it on 429 and 503 only.

    A 503 (busy) keeps the admission gate's own hint rather than the window's reset.
    """
    if not is_api_request() or response.status_code == 429:
        return response
    if response.status_code == 503 and "busy_retry_after" in g:
        response.headers["Retry-After"] = str(g.busy_retry_after)
    else:
        response.headers.pop("Retry-After", None)
    return response
