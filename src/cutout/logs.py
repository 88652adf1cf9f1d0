"""Logging: plain text for people, one JSON object per line for machines, a request id in both.

``CUTOUT_LOG_FORMAT=json`` (the default in production) writes every record as one JSON object:
``time``, ``level``, ``logger``, ``message``, ``request_id`` when it comes from a request,
``exception`` (the traceback, as one string) when there is one, and the fields the access log
adds (``method``, ``path``, ``status``, ``bytes``, ``duration_ms``, ``remote_addr``,
``user_agent``). Text stays the default elsewhere, with the request id in brackets.

The request id is the caller's ``X-Request-ID`` when it is a sane token (1-128 characters of
letters, digits and ``._:-``), else a new random one; :class:`RequestId` (a WSGI middleware
around the whole app) sets it for the request's thread, echoes it in the response's
``X-Request-ID``, and every record logged meanwhile carries it: the app's own, errors with
their tracebacks, and gunicorn's access line (``cutout.gunicorn_config.GunicornLogger``).

What is never logged: secrets, cookies, request or response bodies (so no image bytes), and
no request headers but the user agent. Records only hold what our code formats into them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Extra record attributes the JSON formatter copies (set by the access log).
ACCESS_FIELDS = ("method", "path", "status", "bytes", "duration_ms", "remote_addr", "user_agent")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's id (None outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for field in ACCESS_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.rid = f" [{request_id}]" if request_id else ""
        return super().format(record)


def formatter(json_logs: bool) -> logging.Formatter:
    return JsonFormatter() if json_logs else TextFormatter()


def configure_logging(level: str, *, json_logs: bool = False) -> None:
    """Log to stdout (containers collect it) in the chosen format; idempotent."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_cutout", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler._cutout = True  # type: ignore[attr-defined]
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    handler.setFormatter(formatter(json_logs))
    root.setLevel(level.upper())
    # Pillow logs its complaints about a damaged image at ERROR ("More samples per pixel than
    # can be decoded"), then raises. For us that is bad input, answered with a 400 and an
    # access line: not an error to alert on. Its messages stay visible at DEBUG.
    debugging = root.getEffectiveLevel() <= logging.DEBUG
    logging.getLogger("PIL").setLevel(logging.DEBUG if debugging else logging.CRITICAL)


def request_id_from(header: str | None) -> str:
    """The caller's id if it is a sane token, else a fresh one."""
    if header and _SANE_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestId:
    """WSGI middleware: a request id for every request, in its logs and in its response."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ["cutout.request_id"] = request_id
        token = REQUEST_ID.set(request_id)

        def start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != HEADER.lower()]
            headers.append((HEADER, request_id))
            return start_response(status, headers, *exc)

        try:
            body = self.app(environ, start)
        except BaseException:
            REQUEST_ID.reset(token)
            raise
        return _Closing(body, lambda: REQUEST_ID.reset(token))


class _Closing:
    """The app's response body, resetting the request id once the server has sent it."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            try:
                self._on_close()
            except ValueError:  # closed from another context than it was opened in
                REQUEST_ID.set(None)
