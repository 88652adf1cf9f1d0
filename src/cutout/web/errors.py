"""The one place where errors become HTTP: status codes, JSON bodies, flash messages.

Three audiences get the same error three ways:

* the upload forms (``POST /`` and ``POST /from-url`` from a browser) get a 302 back to ``/``
  with a flash message, worded exactly as the seed's where the seed had one;
* programs (``Accept: application/json``, a JSON body, the JSON endpoints PUT/DELETE, or any
  path under a prefix registered with :func:`json_only`) get
  ``{"error": code, "message": text}`` with the status below;
* anything else gets a small HTML error page with that status.

The API for programs has two more shapes, chosen by path (see :func:`api_surface`):
``/v1.0/...`` answers remove.bg's ``{"errors": [{"title", "code", "detail"}]}`` with remove.bg's
codes and statuses (400 for every bad input, 402, 403, 429), and ``/api/v1/...`` answers
``{"error", "message"}``, always JSON, whatever the Accept header says.
"""

from __future__ import annotations

import logging

from flask import (
    Flask,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cutout import errors as e
from cutout.metrics import observe_error
from cutout.web import bodies

log = logging.getLogger(__name__)

STATUS: dict[type[e.CutoutError], int] = {
    e.InvalidInput: 400,
    e.UnsupportedFormat: 415,
    e.ImageTooLarge: 413,
    e.RequestTooCostly: 413,
    e.BodyTooLarge: 413,
    e.NotFound: 404,
    e.LimitReached: 409,
    e.TooManyDownloads: 429,
    e.QuotaExceeded: 409,
    e.AuthFailed: 401,
    e.KeyRevoked: 403,
    e.Forbidden: 403,
    e.InsufficientCredits: 402,
    e.IdempotencyConflict: 409,
    e.EngineBusy: 503,
    e.EngineError: 502,
    e.ModelError: 503,
    e.StorageError: 503,
}
#: Our names for HTTP errors whose Werkzeug names read badly as codes.
HTTP_CODES = {414: "uri_too_long"}
#: The seed's flash texts, kept word for word.
SUCCESS = "Image generated successfully"
FAILED = "Failed to generate the image"
LIMIT = e.LimitReached.MESSAGE
UNEXPECTED = "Something went wrong"
BUSY = "The server is busy removing other backgrounds. Please try again in a moment."
TOO_MANY = "Too many requests from you in a short time. Please wait a minute and retry."
#: Forms a browser posts without JavaScript: their failures come back as flash messages.
FORM_ENDPOINTS = {"web.create", "studio.create_from_url"}


def status_of(exc: e.CutoutError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def json_only(app: Flask, *prefixes: str) -> None:
    """Answer every error under these path prefixes in JSON, whatever the Accept header says.

    For API blueprints (``json_only(app, "/api/")``): their unknown URLs, wrong methods and
    refused requests (404, 405, 413, 414...) are JSON too, not only their views' own errors.
    """
    known: tuple[str, ...] = app.extensions.get("cutout.json_prefixes", ())
    app.extensions["cutout.json_prefixes"] = known + prefixes


def wants_json() -> bool:
    """JSON for programs: an Accept header preferring it, a JSON body, or a JSON-only endpoint."""
    if request.method in ("PUT", "DELETE") or request.is_json:
        return True
    if request.path.startswith(current_app.extensions.get("cutout.json_prefixes", ())):
        return True
    # On a tie (e.g. curl's */*) best_match prefers the first: HTML, as for a browser.
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def flash_message(exc: Exception) -> str:
    """What the upload form tells the person, for each kind of failure."""
    if isinstance(exc, e.LimitReached):
        return LIMIT
    if isinstance(exc, e.EngineBusy):
        return BUSY
    if isinstance(exc, e.TooManyDownloads):
        return str(exc)
    if isinstance(exc, HTTPException) and exc.code == 429:
        return TOO_MANY
    if isinstance(exc, e.EngineError | e.ModelError):
        return FAILED
    if isinstance(exc, e.InvalidInput):
        return str(exc)
    if isinstance(exc, RequestEntityTooLarge):
        return too_large_message()
    return UNEXPECTED


def too_large_message() -> str:
    """The 413 of a body cut off while it was read (sent without a Content-Length)."""
    settings = current_app.config["CUTOUT"]
    return bodies.too_large(g.get("body_limit", settings.max_upload_bytes), settings)


def error_response(exc: Exception, status: int, code: str, message: str) -> ResponseReturnValue:
    observe_error(code)
    if isinstance(exc, e.EngineBusy):
        g.busy_retry_after = exc.retry_after  # kept over the rate limiter's Retry-After
    surface = api_surface()
    if surface == "removebg":
        return removebg_error(exc, status, code, message)
    if surface == "api":
        return native_error(exc, status, code, message)
    if request.method == "POST" and request.endpoint in FORM_ENDPOINTS and not wants_json():
        flash(flash_message(exc), "danger")
        return redirect(url_for("web.index"))
    if wants_json():
        response = jsonify(error=code, message=message)
        response.status_code = status
        _retry_after(response, exc)
        return response
    return render_template("error.html", status=status, message=message), status


# -- the API surfaces ----------------------------------------------------------------------

#: remove.bg's codes for our generic ones, on /v1.0 (InvalidParameter carries its own).
REMOVEBG_CODES = {
    "invalid_url": "invalid_image_url",
    "download_failed": "failed_image_download",
    "image_too_large": "file_too_large",
    "unsupported_format": "invalid_file_type",
    "invalid_image": "failed_to_read_image",
    "too_many_requests": "rate_limit_exceeded",
    "too_many_downloads": "rate_limit_exceeded",
    "request_entity_too_large": "file_too_large",
    "body_too_large": "file_too_large",
}
#: remove.bg's titles (from its OpenAPI examples); other codes get a generic one.
REMOVEBG_TITLES = {
    "missing_source": "No image given",
    "multiple_sources": "Multiple image sources given",
    "multiple_bg_sources": "Multiple background sources given",
    "file_too_large": "File too large",
    "invalid_file_type": "Invalid file type",
    "failed_image_download": "Failed to download image from given image_url",
    "failed_bg_download": "Failed to download background image from given bg_image_url",
    "failed_to_read_image": "There was an error reading the image.",
    "resolution_too_high": "Image resolution too high",
    "roi_exceeds_bounds": "ROI exceeds image bounds",
    "roi_region_empty": "ROI region is empty",
    "unknown_foreground": "Could not identify foreground in image.",
    "insufficient_credits": "Insufficient credits",
    "rate_limit_exceeded": "Rate limit exceeded",
    "busy": "Service busy, please retry",
}


def api_surface() -> str | None:
    """Which API the request is for, by path: ``removebg``, ``api`` or None (the page)."""
    if request.path.startswith("/v1.0/"):
        return "removebg"
    if request.path.startswith("/api/"):
        return "api"
    return None


def removebg_error(exc: Exception, status: int, code: str, message: str) -> ResponseReturnValue:
    """remove.bg's error shape and statuses: 400 for any bad input, 403 for a bad key."""
    code = REMOVEBG_CODES.get(code, code)
    if status in (409, 413, 415):  # remove.bg reports every unusable input as 400
        status = 400
    if status == 401:
        status = 403
        title = "Missing API Key" if message.startswith("Missing") else "API Key invalid"
    elif code.startswith("invalid_") and code not in REMOVEBG_TITLES:
        title = f"Invalid {code.removeprefix('invalid_')} parameter given"
    else:
        title = REMOVEBG_TITLES.get(code, message if status < 500 else "Server error")
    response = jsonify(errors=[{"title": title, "code": code, "detail": message}])
    response.status_code = status
    _retry_after(response, exc)
    return response


def native_error(exc: Exception, status: int, code: str, message: str) -> ResponseReturnValue:
    response = jsonify(error=code, message=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cutout"'
    _retry_after(response, exc)
    return response


def _retry_after(response: Response, exc: Exception) -> None:
    """Headers the error itself carries: Retry-After when busy, Allow on a 405."""
    if isinstance(exc, e.EngineBusy | e.TooManyDownloads):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, HTTPException):
        for name, value in exc.get_headers():
            if name == "Allow":
                response.headers[name] = value


def _cutout_error(exc: e.CutoutError) -> ResponseReturnValue:
    status = status_of(exc)
    if status >= 500:
        log.warning("%s on %s %s: %s", exc.code, request.method, request.path, exc)
    return error_response(exc, status, exc.code, str(exc))


def _csrf_error(exc: CSRFError) -> ResponseReturnValue:
    # Never a redirect: a forged cross-site POST must not be able to plant flash messages.
    message = "The form expired or is missing its security token. Reload the page and retry."
    observe_error("csrf_failed")
    if wants_json():
        return jsonify(error="csrf_failed", message=exc.description or message), 400
    return render_template("error.html", status=400, message=message), 400


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        return error_response(exc, 413, "image_too_large", too_large_message())
    code = HTTP_CODES.get(status) or (exc.name or "error").lower().replace(" ", "_")
    if status == 429:  # Flask-Limiter: the description names the limit that was hit
        return error_response(
            exc, 429, "rate_limit_exceeded", f"Rate limit exceeded ({exc.description})."
        )
    return error_response(exc, status, code, exc.description or exc.name or "Error")


def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(exc, 500, "internal_error", UNEXPECTED)


def init_app(app: Flask) -> None:
    app.register_error_handler(e.CutoutError, _cutout_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
