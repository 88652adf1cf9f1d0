"""The page's studio endpoints: image URLs, record cards, thumbnails, touch-ups, downloads.

Thin views over :class:`cutout.studio.Studio`; every error goes through :mod:`cutout.web.errors`.

============================================  ==================================================
``POST /from-url``                            form or JSON ``{url, name?}``: fetch, then as
                                              ``POST /`` (browser: 302 + flash; JSON: 201)
``GET /records/<id>/card``                    the history card of one record (HTML fragment)
``GET /records/<id>/thumbnail/<kind>``        ``original`` / ``processed`` at display size
``POST /records/<id>/edits``                  JSON ``{strokes: [...]}``: save a touch-up
``DELETE /records/<id>/edits``                back to the model's cut-out
``GET|POST /records/<id>/export``             a download: format, background, size, mask
============================================  ==================================================
"""

from __future__ import annotations

import io
from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue

from cutout.errors import InvalidInput, NotFound
from cutout.extensions import studio
from cutout.imaging.brush import MAX_POINTS, MAX_STROKES, parse_strokes
from cutout.storage.base import KINDS, Record
from cutout.studio import ExportRequest
from cutout.web import bodies
from cutout.web.bodies import body_limit
from cutout.web.errors import SUCCESS, wants_json
from cutout.web.identity import current_user
from cutout.web.views import UNSAFE_FILENAME, record_json

bp = Blueprint("studio", __name__)
#: The most strokes and points one save may hold (imaging.brush) fit in about 1 MB of JSON.
EDITS_LIMIT = bodies.MIB
EDITS_VALUES = 4 * MAX_POINTS + 8 * MAX_STROKES + 8  # [x, y] per point, four fields a stroke


@bp.app_template_global()
def image_url(record: Record, kind: str) -> str:
    """The URL of a record's image, versioned by its content so browsers never show a stale
    cut-out after an edit (images are cached for an hour)."""
    info = record.original if kind == "original" else record.processed
    version = info.sha256[:12] if info else str(record.revision)
    return url_for("web.image", record_id=record.id, kind=kind, v=version)


@bp.app_template_global()
def thumbnail_url(record: Record, kind: str) -> str:
    info = record.original if kind == "original" else record.processed
    version = info.sha256[:12] if info else str(record.revision)
    return url_for("studio.thumbnail", record_id=record.id, kind=kind, v=version)


@bp.post("/from-url")
def create_from_url() -> ResponseReturnValue:
    """The URL field: the server downloads the image, then it goes on as an upload."""
    body = request.get_json(silent=True) if request.is_json else None
    fields: Any = body if isinstance(body, dict) else request.form
    # Counted per address: user cookies cost nothing to mint.
    record = studio().create_from_url(
        current_user(),
        _text(fields.get("name")),
        _text(fields.get("url")),
        client=f"ip:{request.remote_addr or 'unknown'}",
    )
    if wants_json():
        return jsonify(record_json(record)), 201
    flash(SUCCESS, "success")
    return redirect(url_for("web.index"))


@bp.get("/records/<string:record_id>/card")
def card(record_id: str) -> ResponseReturnValue:
    """One history card, rendered by the same template as the page (the page inserts it)."""
    record = studio().store.get(current_user(), record_id)
    return render_template("_record.html", record=record)


@bp.get("/records/<string:record_id>/thumbnail/<string:kind>")
def thumbnail(record_id: str, kind: str) -> ResponseReturnValue:
    if kind not in KINDS:
        raise NotFound("No such image.")
    thumb = studio().thumbnail(current_user(), record_id, kind)
    response = send_file(
        io.BytesIO(thumb.data),
        mimetype=thumb.media_type,
        etag=f"{thumb.source_sha256[:32]}-{thumb.width}",
        conditional=True,
        max_age=3600,
        last_modified=None,
    )
    return _private(response)


@bp.post("/records/<string:record_id>/edits")
@body_limit(EDITS_LIMIT, json_values=EDITS_VALUES)
def save_edit(record_id: str) -> ResponseReturnValue:
    """Apply the page's brush strokes to the full-size alpha; the result becomes the cut-out."""
    studio().store.get(current_user(), record_id)  # someone else's or none: before the body
    strokes = parse_strokes(request.get_json(silent=True))
    record = studio().edit(current_user(), record_id, strokes)
    return jsonify(record_json(record))


@bp.delete("/records/<string:record_id>/edits")
def reset_edit(record_id: str) -> ResponseReturnValue:
    """Back to the model's own cut-out (it was never overwritten)."""
    record = studio().reset(current_user(), record_id)
    return jsonify(record_json(record))


@bp.route("/records/<string:record_id>/export", methods=["GET", "POST"])
@body_limit(bodies.upload)  # a background picture
def export(record_id: str) -> ResponseReturnValue:
    """The cut-out as a file: PNG/WebP/JPEG, a background, a size, or the mask alone.

    GET takes the options as query parameters (a plain link); POST takes them as a form, which
    is how a background picture is sent.
    """
    studio().store.get(current_user(), record_id)  # someone else's or none: before the body
    upload = request.files.get("background_image")
    picture = upload.read() if upload and upload.filename else None
    options = ExportRequest.from_form(request.values, picture)
    record, encoded = studio().export(current_user(), record_id, options)
    stem = UNSAFE_FILENAME.sub("-", record.image_name).strip(" .-") or "image"
    name = f"{stem}-mask{encoded.extension}" if options.mask_only else stem + encoded.extension
    response = send_file(
        io.BytesIO(encoded.data),
        mimetype=encoded.media_type,
        as_attachment=True,
        download_name=name,
        max_age=0,
    )
    return _private(response)


def _private(response: Response) -> Response:
    # Images are per user: shared caches must not keep them.
    response.cache_control.private = True
    response.cache_control.public = False
    return response


def _text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput("Send the fields as text.")
    return value
