"""The native API, ``/api/v1``: images as a resource, owned by the key's user.

The same :class:`~cutout.service.ImageService` and rules as the page (names, ``USER_LIMIT``,
ownership): an image uploaded with a key shows in the history of the browser that made the
key. ``POST /api/v1/images`` honours ``Idempotency-Key``: a retry with the same key and the same
request gets the first answer again instead of a second record. The contract of every route
is declared beside it and served as OpenAPI 3.1 at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError

from cutout.api import models
from cutout.api.auth import current_key, keys, rate_limit_key
from cutout.api.openapi import Operation, operation
from cutout.api.openapi import Response as Doc
from cutout.errors import InvalidInput, NotFound
from cutout.extensions import image_service
from cutout.extensions import settings as app_settings
from cutout.imaging.compose import OutputOptions, parse_color
from cutout.storage.base import KINDS, Record, info_json
from cutout.storage.keys import StoredResponse
from cutout.urlfetch import fetch
from cutout.web import bodies
from cutout.web.bodies import body_limit

bp = Blueprint("api", __name__, url_prefix="/api/v1")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "image/bmp")
#: Credits one stored image costs, as a full-size image on /v1.0.
IMAGE_COST = 1.0
IDEMPOTENCY = {"Idempotency-Key": "Makes a retried POST return the first result (24 hours)."}
NOT_FOUND = Doc("No such image, or it is not this key's user's.", models.ErrorBody)
BAD = Doc("A parameter or the photo is not acceptable.", models.ErrorBody)


@bp.post("/images")
@operation(
    Operation(
        summary="Remove the background of a photo and keep both images",
        json_body=models.ImageFromJson,
        form_body=models.ImageUpload,
        headers=IDEMPOTENCY,
        responses={
            201: Doc(
                "Stored; the same as GET /images/{id}.",
                models.Image,
                headers={
                    "Location": "The new image's URL.",
                    "X-Cutout-Confidence": "The cut-out's confidence, 0-1 (absent if unscored).",
                },
            ),
            400: BAD,
            402: Doc("The key's credits are used up (an image costs 1).", models.ErrorBody),
            403: Doc("The key was revoked while the request ran.", models.ErrorBody),
            409: Doc("At USER_LIMIT, or the Idempotency-Key is in use.", models.ErrorBody),
            413: Doc("The photo is too large (bytes or pixels).", models.ErrorBody),
            415: Doc("An image, but not a format we read.", models.ErrorBody),
            502: Doc("The engine failed.", models.ErrorBody),
            503: Doc(
                "Busy: retry after Retry-After seconds.",
                models.ErrorBody,
                headers={"Retry-After": "Seconds."},
            ),
        },
    )
)
@body_limit(bodies.base64_upload)
def create_image() -> ResponseReturnValue:
    user_id = current_key().user_id
    fields, data = _upload()
    idempotency_key = request.headers.get("Idempotency-Key", "").strip()
    if len(idempotency_key) > 255:
        raise InvalidInput("The Idempotency-Key header is at most 255 characters.")
    if not idempotency_key:
        return _created(_store(user_id, fields, data))
    fingerprint = _fingerprint(fields, data)
    store = keys().store
    stored = store.begin_idempotent(user_id, idempotency_key, fingerprint, time.time())
    if stored is not None:
        response = Response(stored.body, stored.status, mimetype="application/json")
        response.headers["Idempotent-Replayed"] = "true"
        return response
    try:
        response = _created(_store(user_id, fields, data))
    except BaseException:
        store.abandon_idempotent(user_id, idempotency_key)
        raise
    store.finish_idempotent(user_id, idempotency_key, StoredResponse(201, response.get_data(True)))
    return response


def _upload() -> tuple[models.OutputChoices, bytes]:
    """The validated fields and the photo's bytes, from multipart or JSON."""
    if request.is_json:
        body = request.get_json()
        parsed = _valid(models.ImageFromJson, body if isinstance(body, dict) else None)
        assert isinstance(parsed, models.ImageFromJson)
        if bool(parsed.image_b64) == bool(parsed.image_url):
            raise InvalidInput("Send exactly one of image_b64 and image_url.")
        if parsed.image_url:
            settings = app_settings()
            return parsed, fetch(
                parsed.image_url, settings.fetch_policy, client=rate_limit_key()
            ).data
        try:
            return parsed, base64.b64decode(
                "".join((parsed.image_b64 or "").split()), validate=True
            )
        except (binascii.Error, ValueError):
            raise InvalidInput("image_b64 is not valid base64.") from None
    upload = request.files.get("image")
    data = upload.read() if upload else b""
    fields: dict[str, Any] = request.form.to_dict()
    fields["image"] = data
    return _valid(models.ImageUpload, fields), data


def _valid(model: type[models.OutputChoices], body: dict[str, Any] | None) -> models.OutputChoices:
    if body is None:
        raise InvalidInput("The JSON body must be an object.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    problem = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    return f"{where}: {problem['msg']}."


def _store(user_id: str, fields: models.OutputChoices, data: bytes) -> Record:
    """Charge the key, then remove and store (the charge is given back if that fails)."""
    settings = app_settings()
    output = OutputOptions(
        format=fields.format,
        background=parse_color(fields.background) if fields.background else None,
        crop=fields.crop,
        crop_margin=fields.margin,
        mask_only=fields.mask_only,
        png_compression=settings.png_compression,
    )
    name = getattr(fields, "name", None)
    with keys().spend(current_key(), IMAGE_COST):
        return image_service().create(user_id, name, data, output=output)


def _fingerprint(fields: BaseModel, data: bytes) -> str:
    """What makes two requests "the same" for Idempotency-Key: every field and the bytes."""
    described = fields.model_dump(mode="json", exclude={"image", "image_b64"})
    text = json.dumps(described, sort_keys=True) + hashlib.sha256(data).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()


def _created(record: Record) -> Response:
    response = jsonify(image_json(record))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_image", image_id=record.id)
    if record.confidence is not None:
        response.headers["X-Cutout-Confidence"] = f"{record.confidence:.3f}"
    return response


@bp.get("/images")
@operation(
    Operation(
        summary="List the key's user's images, newest first",
        query=models.Page,
        responses={200: Doc("One page of images.", models.ImagePage), 400: BAD},
    )
)
def list_images() -> ResponseReturnValue:
    page = _valid_page()
    records = image_service().history(current_key().user_id)
    start = (page.page - 1) * page.per_page
    return jsonify(
        items=[image_json(r) for r in records[start : start + page.per_page]],
        page=page.page,
        per_page=page.per_page,
        total=len(records),
    )


def _valid_page() -> models.Page:
    try:
        return models.Page.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None


@bp.get("/images/<string:image_id>")
@operation(
    Operation(
        summary="One image's details",
        responses={200: Doc("The image.", models.Image), 404: NOT_FOUND},
    )
)
def get_image(image_id: str) -> ResponseReturnValue:
    return jsonify(image_json(image_service().store.get(current_key().user_id, image_id)))


@bp.patch("/images/<string:image_id>")
@operation(
    Operation(
        summary="Rename an image",
        json_body=models.Rename,
        responses={200: Doc("Renamed.", models.Image), 400: BAD, 404: NOT_FOUND},
    )
)
def rename_image(image_id: str) -> ResponseReturnValue:
    body = request.get_json(silent=True)  # no JSON at all is a 400 like any other bad body
    try:
        rename = models.Rename.model_validate(body if isinstance(body, dict) else None)
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None
    return jsonify(image_json(image_service().rename(current_key().user_id, image_id, rename.name)))


@bp.delete("/images/<string:image_id>")
@operation(
    Operation(
        summary="Delete an image and both its files",
        responses={204: Doc("Deleted.", media_types=()), 404: NOT_FOUND},
    )
)
def delete_image(image_id: str) -> ResponseReturnValue:
    image_service().delete(current_key().user_id, image_id)
    return Response(status=204)


@bp.get("/images/<string:image_id>/<string:kind>")
@operation(
    Operation(
        summary="The original photo or the cut-out, as stored",
        description="kind is `original` or `processed`.",
        responses={200: Doc("The image bytes.", media_types=IMAGE_TYPES), 404: NOT_FOUND},
    )
)
def image_bytes(image_id: str, kind: str) -> ResponseReturnValue:
    if kind not in KINDS:
        raise NotFound("No such image: the last part is original or processed.")
    _, info, data = image_service().image(current_key().user_id, image_id, kind)
    response = send_file(io.BytesIO(data), mimetype=info.media_type, etag=info.sha256)
    response.headers["Cache-Control"] = "private, no-store"
    return response


def image_json(record: Record) -> dict[str, Any]:
    """A record as the native API shows it (the models.Image schema)."""

    links = {k: url_for("api.image_bytes", image_id=record.id, kind=k) for k in KINDS}
    return {
        "id": record.id,
        "name": record.image_name,
        "created_on": record.created_on,
        "engine": record.engine,
        "model": record.model,
        "confidence": record.confidence,
        "needs_review": record.needs_review,
        "original": info_json(record.original),
        "processed": info_json(record.processed),
        "links": {"self": url_for("api.get_image", image_id=record.id), **links},
    }
