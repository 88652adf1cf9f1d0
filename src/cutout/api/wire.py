"""HTTP details that published remove.bg clients rely on, below the level of any one view.

* **Unread bodies are drained.** A request refused before its body was read (a bad key, the
  rate limit, a wrong method) leaves the upload on the socket. gunicorn skips at most 64 KiB
  of it and then closes the connection, after the response already said ``keep-alive``; the
  next request a client sends on that connection dies with ECONNRESET (the npm ``remove.bg``
  client, on Node's keep-alive agent, reported such a failure as ``undefined``). Reading the
  rest of the body, up to the upload limit, keeps the connection usable.
* **CORS on /v1.0, as remove.bg.** remove.bg answers every call with
  ``Access-Control-Allow-Origin: *``, so pages call it straight from the browser. These routes
  authenticate with a key only (no cookie is read), so any origin may call them: it can do no
  more than the key lets it. Preflights get the methods and headers they ask for, are not
  rate limited, and need no key; remove.bg's result headers are exposed to scripts.
  (The native ``/api/v1`` stays same-origin: nothing asked for more.)
* **JSON as remove.bg labels it:** ``application/json; charset=utf-8``.
"""

from __future__ import annotations

import contextlib

from flask import Flask, Response, request
from flask_limiter import Limiter
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import LimitedStream

from cutout.api.auth import is_api_request

REMOVEBG_PREFIX = "/v1.0/"
#: Response headers a browser script may read (remove.bg's, and the rate limit's).
EXPOSED = ", ".join(
    (
        "X-Width",
        "X-Height",
        "X-Type",
        "X-Credits-Charged",
        "X-Foreground-Top",
        "X-Foreground-Left",
        "X-Foreground-Width",
        "X-Foreground-Height",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
        "X-Cutout-Confidence",
        "X-Cutout-Needs-Review",
    )
)
PREFLIGHT_HEADERS = "X-Api-Key, Authorization, Content-Type, Accept"


def init_app(app: Flask, limiter: Limiter) -> None:
    app.after_request(drain_unread_body)
    app.after_request(removebg_headers)
    limiter.request_filter(is_preflight)  # a browser's question costs no quota


def is_preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def drain_unread_body(response: Response) -> Response:
    """Read what is left of an API request's body, so the connection can be reused."""
    if not is_api_request():
        return response
    length, limit = request.content_length, request.max_content_length
    if length is None or (limit is not None and length > limit):
        return response  # chunked, or refused as too large: let the server close
    stream = request.stream
    if isinstance(stream, LimitedStream):  # bounded by Content-Length: it cannot run on
        with contextlib.suppress(ClientDisconnected, OSError):
            stream.exhaust()
    return response


def removebg_headers(response: Response) -> Response:
    """CORS and remove.bg's JSON content type on every /v1.0 answer, errors included."""
    if not request.path.startswith(REMOVEBG_PREFIX):
        return response
    if response.mimetype == "application/json":
        response.content_type = "application/json; charset=utf-8"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = EXPOSED
    if is_preflight():
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        asked = request.headers.get("Access-Control-Request-Headers", "").strip()
        response.headers["Access-Control-Allow-Headers"] = asked or PREFLIGHT_HEADERS
        response.headers["Access-Control-Max-Age"] = "86400"
    return response
