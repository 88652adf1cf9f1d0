"""HTTP details that published remove.bg clients rely on, below the level of any one view.

* **Unread bodies are drained.** A request refused before its body was read (a bad key, the
  rate limit, a wrong method) leaves the upload on the socket. gunicorn skips at most 64 KiB
  of it and then closes the connection, after the response already said ``keep-alive``; the
  next request a client sends on that connection dies with ECONNRESET (the npm ``remove.bg``
  client, on Node's keep-alive agent, reported such a failure as ``undefined``). Reading the
  rest of the body, up to the upload limit, keeps the connection usable.
"""

from __future__ import annotations

import contextlib

from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import LimitedStream

from cutout.api.auth import is_api_request


def init_app(app: Flask) -> None:
    app.after_request(drain_unread_body)


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
