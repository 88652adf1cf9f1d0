"""The request class of the app: malformed JSON is bad input, on every endpoint.

Werkzeug turns a body that does not parse into a ``BadRequest`` only for ``ValueError``;
a body nested a thousand levels deep makes the json module raise ``RecursionError`` instead,
which escaped as a 500. Here both become :class:`~cutout.errors.InvalidJSON` (400, the usual
``{"error", "message"}`` shape), for ``get_json()`` and ``request.json`` alike, so any JSON
endpoint added later is covered without doing anything.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, g, request
from werkzeug.exceptions import RequestURITooLarge

from cutout.errors import InvalidJSON

MESSAGE = "The request body is not valid JSON (or is nested too deeply)."
#: Longest request target (path and query) we answer, in characters. gunicorn's own ceiling
#: (``limit_request_line`` in gunicorn_config) is set above this, so that an overlong URL
#: reaches us and gets our error (JSON for programs) instead of gunicorn's HTML page.
MAX_URL_LENGTH = 4096


class CutoutRequest(Request):
    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if force or self.is_json:
            _check_json_values(self.get_data(cache=True))
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            if silent:
                return None
            return self.on_json_loading_failed(ValueError("nested too deeply"))

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:  # not sent as JSON: Werkzeug's 415, mapped to our shape by web.errors
            return super().on_json_loading_failed(e)
        raise InvalidJSON(MESSAGE)


def _check_json_values(body: bytes) -> None:
    """Refuse, before parsing, a JSON body with more values than its endpoint takes.

    Every value but the last is followed by a comma, and every array or object opens with a
    bracket: their count bounds the values (commas inside strings only make it safer).
    """
    allowed: int | None = g.get("json_values")
    if allowed is None:
        return
    found = body.count(b",") + body.count(b"[") + body.count(b"{")
    if found > allowed:
        raise InvalidJSON(
            f"The JSON body holds too many values for this endpoint (at most {allowed})."
        )


def init_app(app: Flask) -> None:
    app.request_class = CutoutRequest
    # First of all before_request functions: refuse before identity, CSRF or the view run.
    app.before_request_funcs.setdefault(None, []).insert(0, _check_url_length)


def _check_url_length() -> None:
    target = request.environ.get("RAW_URI") or request.full_path
    if len(target) > MAX_URL_LENGTH:
        raise RequestURITooLarge(f"The URL is too long: at most {MAX_URL_LENGTH} characters.")
