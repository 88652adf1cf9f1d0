"""Request body limits per endpoint: each view reads at most what it needs.

One app-wide ``MAX_CONTENT_LENGTH`` sized for photo uploads let a rename (a few hundred bytes)
or a touch-up accept 25 MB of JSON, parsed before any check: four such requests took a worker
from 389 MB to 4.5 GB. Here every endpoint has its own limit, small unless the view declares
more with :func:`body_limit`, so a new endpoint is safe without doing anything:

* a declared ``Content-Length`` over the limit is refused (413) before a byte is read, before
  identity, CSRF or the view run;
* a body without one (chunked) is cut off at the limit while it is read (Werkzeug's
  ``max_content_length``, per request), and so are multipart text fields
  (``max_form_memory_size``).

Limits are bytes, or a function of the settings for those that follow the upload limit.

JSON has a second limit: how many values a body may hold. Parsed JSON is far larger than its
text when it is made of many small values (``[[],[],...]`` grows twentyfold in Python), so a
25 MB body that is fine as one base64 string is refused when it is a million tiny arrays,
from a count of its separators, before it is parsed (:class:`cutout.web.request.CutoutRequest`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, g, request
from werkzeug.exceptions import HTTPException

from cutout.config import Settings
from cutout.errors import BodyTooLarge, ImageTooLarge

KIB = 1024
MIB = 1024 * KIB
#: What an endpoint that declares nothing may receive: names, keys, URLs, small JSON.
SMALL = 16 * KIB
#: Room for the multipart envelope and the other form fields around an image.
FORM_OVERHEAD = 64 * KIB
#: Values a JSON body may hold unless its view says otherwise: every JSON body we take is an
#: object of a few fields.
JSON_VALUES = 256
ATTRIBUTE = "cutout_body_limit"
JSON_ATTRIBUTE = "cutout_json_values"

Limit = int | Callable[[Settings], int]
View = TypeVar("View", bound=Callable[..., object])


def upload(settings: Settings) -> int:
    """One photo in a multipart form, with room for the other fields."""
    return settings.max_upload_bytes + FORM_OVERHEAD


def base64_upload(settings: Settings) -> int:
    """One photo as a file, or in base64 inside a form or JSON (a third larger)."""
    return settings.max_upload_bytes * 4 // 3 + FORM_OVERHEAD


def two_uploads(settings: Settings) -> int:
    """A photo and a background picture (each may be base64)."""
    return 2 * base64_upload(settings)


def body_limit(limit: Limit, *, json_values: int = JSON_VALUES) -> Callable[[View], View]:
    """Declare how large a body the decorated view may receive (bytes, or from settings),
    and how many values its JSON may hold."""

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, limit)
        setattr(view, JSON_ATTRIBUTE, json_values)
        return view

    return mark


def limit_for(endpoint: str | None, settings: Settings) -> int:
    view = current_app.view_functions.get(endpoint) if endpoint else None
    declared: Limit = getattr(view, ATTRIBUTE, SMALL)
    return declared(settings) if callable(declared) else declared


def limit_for_path(app: Flask, method: str, path: str) -> int:
    """The body limit of the endpoint *method* *path* goes to, outside any request: for the
    web worker, which buffers bodies before the app runs (:mod:`cutout.front`). A path that
    routes nowhere gets the largest limit: the app never reads its body, and no routing
    subtlety here may cut a body the app would take."""
    settings: Settings = app.config["CUTOUT"]
    try:
        endpoint, _ = app.url_map.bind("localhost").match(path, method)
    except HTTPException:  # 404, 405, a redirect to the slash form
        endpoint = None
    view = app.view_functions.get(str(endpoint)) if endpoint else None
    if view is None:
        return max(
            _resolved(getattr(v, ATTRIBUTE, SMALL), settings) for v in app.view_functions.values()
        )
    return _resolved(getattr(view, ATTRIBUTE, SMALL), settings)


def _resolved(limit: Limit, settings: Settings) -> int:
    return limit(settings) if callable(limit) else limit


def json_values_for(endpoint: str | None) -> int:
    view = current_app.view_functions.get(endpoint) if endpoint else None
    values: int = getattr(view, JSON_ATTRIBUTE, JSON_VALUES)
    return values


def init_app(app: Flask) -> None:
    # Among the first before_request functions: nothing may read the body before this.
    app.before_request_funcs.setdefault(None, []).insert(0, _apply_limit)


def _apply_limit() -> None:
    settings: Settings = current_app.config["CUTOUT"]
    limit = limit_for(request.endpoint, settings)
    g.body_limit = limit
    g.json_values = json_values_for(request.endpoint)
    request.max_content_length = limit
    request.max_form_memory_size = limit  # one text field may hold a whole base64 image
    length = request.content_length
    if length is not None and length > limit:
        error = ImageTooLarge if limit >= settings.max_upload_bytes else BodyTooLarge
        raise error(too_large(limit, settings))


def too_large(limit: int, settings: Settings) -> str:
    """The 413's sentence: the upload limit where photos are sent, else this body's limit."""
    if limit >= settings.max_upload_bytes:
        return (
            f"The file is too large: the largest accepted upload is {settings.max_upload_mb:g} MB."
        )
    shown = f"{limit // KIB} KB" if limit < MIB else f"{limit / MIB:g} MB"
    return f"The request body is too large: this endpoint accepts at most {shown}."
