"""Request ids and the log formats, in-process (the live server's lines: test_live_ops.py)."""

from __future__ import annotations

import io
import json
import logging
import re

from flask import Flask

from cutout.logs import (
    REQUEST_ID,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    request_id_from,
)


def capture(formatter: logging.Formatter) -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter)
    return handler, stream


def test_a_sane_request_id_is_kept_anything_else_replaced() -> None:
    assert request_id_from("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "a b", "x" * 129, "new\nline", "é"):
        assert re.fullmatch(r"[0-9a-f]{32}", request_id_from(bad))


def test_every_line_of_a_request_carries_its_id(app: Flask) -> None:
    handler, stream = capture(JsonFormatter())
    log = logging.getLogger("cutout.test")
    log.addHandler(handler)
    # Other tests' responses are left unclosed, which leaves their ids set on this thread.
    outer = REQUEST_ID.set(None)
    try:

        @app.get("/test-only/log")
        def logs_something() -> str:
            log.warning("inside the request")
            return "ok"

        response = app.test_client().get("/test-only/log", headers={"X-Request-ID": "r-1"})
        response.close()  # as a server does once it has sent the body: the id is unset
        log.warning("outside any request")
    finally:
        log.removeHandler(handler)
        REQUEST_ID.reset(outer)
    assert response.headers["X-Request-ID"] == "r-1"
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["request_id"] == "r-1" and inside["message"] == "inside the request"
    assert "request_id" not in outside


def test_json_lines_hold_the_traceback_as_one_string() -> None:
    handler, stream = capture(JsonFormatter())
    log = logging.getLogger("cutout.test.json")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()  # one line, however long the traceback
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["message"] == "failed"
    assert "ValueError: boom" in entry["exception"]


def test_text_lines_show_the_request_id_in_brackets() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.request_id = "r-9"
    assert TextFormatter().format(record).endswith("INFO x [r-9]: hello")
