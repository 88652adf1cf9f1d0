"""The seed's endpoints: ``GET /``, ``POST /``, ``PUT /update/<id>``, ``DELETE /remove/<id>``,
plus ``GET /images/<id>/<kind>`` to serve the stored images (the seed inlined base64 instead).

Each view parses the request, calls :class:`~cutout.service.ImageService`, and renders or
serialises the result; errors propagate to :mod:`cutout.web.errors`.
"""

from __future__ import annotations

import io
import re
from typing import Any

from flask import (
    Blueprint,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue

from cutout.engine import required_models
from cutout.errors import InvalidInput, LimitReached, NotFound
from cutout.extensions import image_service, settings
from cutout.storage.base import KINDS, ImageInfo, Record, info_json
from cutout.web import bodies
from cutout.web.bodies import body_limit
from cutout.web.errors import SUCCESS, wants_json
from cutout.web.identity import current_user

bp = Blueprint("web", __name__)
UNSAFE_FILENAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]+')
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
    "image/bmp": ".bmp",
}


@bp.app_context_processor
def engine_note() -> dict[str, str]:
    """The footer's line on where photos go: it must stay true for every engine setting."""
    config = settings()
    if config.engine != "local":
        return {"engine_note": "Backgrounds are removed by an external service (RapidAPI)."}
    models = " + ".join(spec.name for spec in required_models(config))
    return {"engine_note": f"Backgrounds are removed on this server ({models} models)."}


@bp.get("/")
def index() -> ResponseReturnValue:
    """The home page (history + upload form), or the same data as JSON."""
    records = image_service().history(current_user())
    limit = settings().user_limit
    if wants_json():
        return jsonify(
            user_id=current_user(),
            limit=limit,
            used=len(records),
            records=[record_json(r) for r in records],
        )
    return render_template(
        "index.html",
        records=records,
        limit=limit,
        used=len(records),
        max_upload_mb=settings().max_upload_mb,
        default_quality=settings().quality,
        limit_message=LimitReached.MESSAGE,  # the queue shows it for photos that do not fit
        job_threshold=settings().page_job_threshold,  # more photos at once go as one job
    )


@bp.post("/")
@body_limit(bodies.upload)
def create() -> ResponseReturnValue:
    """Upload form: remove the background, store the pair, come back to ``/``."""
    upload = request.files.get("image")
    data = upload.read() if upload and upload.filename else None
    record = image_service().create(
        current_user(), request.form.get("name"), data, quality=request.form.get("quality")
    )
    if wants_json():
        return jsonify(record_json(record)), 201
    flash(SUCCESS, "success")
    return redirect(url_for("web.index"))


@bp.put("/update/<string:record_id>")
@body_limit(4 * bodies.KIB)  # {"record_id", "record_name"}: a few hundred bytes
def update(record_id: str) -> ResponseReturnValue:
    """Rename: JSON ``{"record_id", "record_name"}`` as the seed's page sent it."""
    body = request.get_json(force=True)  # any Content-Type, as curl -d sends; strict syntax
    if not isinstance(body, dict):
        raise InvalidInput('Send JSON like {"record_id": "...", "record_name": "New name"}.')
    if body.get("record_id") not in (None, record_id):
        raise InvalidInput("record_id in the body does not match the URL.")
    name = body.get("record_name")
    image_service().rename(current_user(), record_id, name if isinstance(name, str) else None)
    return jsonify(message="success")


@bp.delete("/remove/<string:record_id>")
def remove(record_id: str) -> ResponseReturnValue:
    """Delete a record and both its images."""
    image_service().delete(current_user(), record_id)
    return jsonify(message="success")


@bp.get("/images/<string:record_id>/<string:kind>")
def image(record_id: str, kind: str) -> ResponseReturnValue:
    """The bytes of one of the caller's images; ``?download=1`` makes it an attachment."""
    if kind not in KINDS:
        raise NotFound("No such image.")
    record, info, data = image_service().image(current_user(), record_id, kind)
    download = request.args.get("download") == "1"
    response = send_file(
        io.BytesIO(data),
        mimetype=info.media_type,
        as_attachment=download,
        download_name=download_name(record, info, kind),
        etag=info.sha256,
        conditional=True,
        max_age=3600,
        last_modified=None,
    )
    # Images are per user: shared caches must not keep them.
    response.cache_control.private = True
    response.cache_control.public = False
    return response


def download_name(record: Record, info: ImageInfo, kind: str) -> str:
    """The image name as a safe file name: no path separators or characters Windows rejects."""
    stem = UNSAFE_FILENAME.sub("-", record.image_name).strip(" .-") or "image"
    suffix = "" if kind == "processed" else "-original"
    return f"{stem}{suffix}{EXTENSIONS.get(info.media_type, '')}"


def record_json(record: Record) -> dict[str, Any]:
    """A record as the JSON API shows it: metadata and URLs, never image bytes."""

    urls = {kind: url_for("web.image", record_id=record.id, kind=kind) for kind in KINDS}
    return {
        "_id": record.id,
        "image_name": record.image_name,
        "created_on": record.created_on,
        "original_url": urls["original"],
        "processed_url": urls["processed"],
        "download_url": urls["processed"] + "?download=1",
        "original": info_json(record.original),
        "processed": info_json(record.processed),
        "engine": record.engine,
        "model": record.model,
        "confidence": record.confidence,
        "needs_review": record.needs_review,
        "edited": record.edited,  # the cut-out was touched up by hand (the model's is kept)
        "revision": record.revision,
        "thumbnail_urls": {
            kind: url_for("studio.thumbnail", record_id=record.id, kind=kind) for kind in KINDS
        },
    }
