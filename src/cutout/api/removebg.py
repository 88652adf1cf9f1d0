"""remove.bg's API v1.0 on our own model: ``POST /v1.0/removebg``, ``GET /v1.0/account``,
``POST /v1.0/improve``. Change one URL in a remove.bg client and it works here.

The contract is remove.bg's OpenAPI description (``../shared/docs/specs/removebg-openapi.json``)
plus what published clients really send (``api-contracts.md`` section 7). Calls are stateless,
as on remove.bg: nothing goes into the user's history. Errors are rendered by
:mod:`cutout.web.errors` in remove.bg's shape, ``{"errors": [{"title", "code", "detail"}]}``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from PIL import Image
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.formparser import FormDataParser, MultiPartParser

from cutout.api.auth import current_key, keys, rate_limit_key
from cutout.errors import (
    DownloadFailed,
    ImageTooLarge,
    InsufficientCredits,
    InvalidImage,
    InvalidParameter,
    InvalidUrl,
    UnsupportedFormat,
)
from cutout.extensions import image_service
from cutout.extensions import settings as app_settings
from cutout.imaging.confidence import needs_review
from cutout.imaging.decode import Photo, load_reduced, probe
from cutout.memory import decode_cost, output_cost, render_cost
from cutout.removebg.params import Params, parse
from cutout.removebg.render import Rendered, render
from cutout.storage.keys import ApiKey, Improvement
from cutout.urlfetch import fetch
from cutout.web import bodies
from cutout.web.bodies import body_limit

bp = Blueprint("removebg", __name__, url_prefix="/v1.0")
#: What /account reports as the balance of a key without an allowance (remove.bg's field is a
#: number; clients such as remove-bg-api subtract each charge from it locally).
UNLIMITED_CREDITS = 999_999
IMPROVE_MAX_BYTES = 12 * 1024 * 1024  # remove.bg's limit for /improve
BINARY_FIELDS = ("image_file", "bg_image_file")


# -- request parsing -----------------------------------------------------------------------


class _ReversibleMultiPartParser(MultiPartParser):
    """Decode every part as Latin-1, which maps bytes 1:1, so a binary ``image_file`` sent
    without a filename (some clients do) survives; text fields are re-decoded as UTF-8 later."""

    def get_part_charset(self, headers: Headers) -> str:
        return "latin-1"


class _ReversibleFormDataParser(FormDataParser):
    def _parse_multipart(
        self, stream: Any, mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        parser = _ReversibleMultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
        )
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


@bp.before_request
def _keep_binary_fields() -> None:
    request.form_data_parser_class = _ReversibleFormDataParser  # this request only


def payload() -> tuple[dict[str, Any], dict[str, bytes]]:
    """The request's fields (multipart, urlencoded or JSON) and its binary parts."""
    if request.is_json:
        body = request.get_json()
        if not isinstance(body, dict):
            raise InvalidParameter("The JSON body must be an object of parameters.", "invalid_json")
        return body, {}
    multipart = request.mimetype == "multipart/form-data"
    fields: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    for name, value in request.form.items():
        if multipart and name in BINARY_FIELDS:
            blobs[name] = value.encode("latin-1")  # a file part that came without a filename
        else:
            fields[name] = (
                value.encode("latin-1").decode("utf-8", "replace") if multipart else value
            )
    for name in BINARY_FIELDS:
        upload: FileStorage | None = request.files.get(name)
        if upload is not None:
            data = upload.read()
            if data:  # the Node CLI attaches an empty bg_image_file when none is wanted
                blobs[name] = data
    return fields, blobs


def image_source(fields: Mapping[str, Any], blobs: Mapping[str, bytes]) -> bytes:
    """The source image's bytes: exactly one of image_file, image_file_b64, image_url."""
    b64, url = _text(fields.get("image_file_b64")), _text(fields.get("image_url"))
    given = [s for s in (blobs.get("image_file"), b64, url) if s]
    if not given:
        raise InvalidParameter(
            "No image given: please provide the source image in the image_url, image_file or "
            "image_file_b64 parameter.",
            "missing_source",
        )
    if len(given) > 1:
        raise InvalidParameter(
            "Multiple image sources given: please provide either the image_url, image_file or "
            "image_file_b64 parameter.",
            "multiple_sources",
        )
    if blobs.get("image_file"):
        data = blobs["image_file"]
    elif b64:
        data = _b64(b64)
    else:
        data = download(str(url), "image")
    return _within_limit(data)


def download(url: str, which: str) -> bytes:
    """GET *url* through the SSRF-safe fetcher; failures get remove.bg's codes."""
    prefix = "" if which == "image" else "bg_"
    settings = app_settings()
    try:
        return fetch(url, settings.fetch_policy, client=rate_limit_key()).data
    except InvalidUrl as exc:
        raise InvalidParameter(str(exc), f"invalid_{prefix}image_url") from None
    except DownloadFailed as exc:
        code = "failed_image_download" if which == "image" else "failed_bg_download"
        raise InvalidParameter(str(exc), code) from None
    except ImageTooLarge as exc:
        raise InvalidParameter(str(exc), "file_too_large") from None


def _b64(text: str) -> bytes:
    _, _, payload = text.rpartition(",")  # tolerate a "data:image/png;base64," prefix
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(
            "image_file_b64 is not valid base64.", "failed_to_read_image"
        ) from None


def _within_limit(data: bytes) -> bytes:
    settings = app_settings()
    if len(data) > settings.max_upload_bytes:
        raise InvalidParameter(
            f"File exceeds limit of {settings.max_upload_mb:g}MB.", "file_too_large"
        )
    return data


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# -- the endpoints -------------------------------------------------------------------------


@bp.post("/removebg")
@body_limit(bodies.two_uploads)  # the photo and a background picture, either in base64
def removebg() -> ResponseReturnValue:
    """Remove the background; answer the image (or JSON with ``Accept: application/json``)."""
    key = current_key()
    fields, blobs = payload()
    params, cost = priced(parse(fields), key)
    source = image_source(fields, blobs)
    background = background_picture(fields, blobs, params)
    with keys().spend(key, cost):  # before the work; given back if it fails
        rendered, confidence = _cut(source, params, background)
    return result_response(rendered, params, cost, confidence)


def priced(params: Params, key: ApiKey) -> tuple[Params, float]:
    """Resolve ``size=auto`` and the cost; refuse (402) a key that cannot pay for it."""
    left = key.credits_left
    if params.size == "auto":
        params = dataclasses.replace(
            params, size="full" if left is None or left >= 1 else "preview"
        )
    cost = 0.25 if params.preview else 1.0
    if left is not None and left < cost:
        raise InsufficientCredits(
            f"Insufficient credits: this image costs {credits_text(cost)} and the key has "
            f"{credits_text(left)} left."
        )
    return params, cost


@dataclass(frozen=True)
class BackgroundPicture:
    """bg_image_file / bg_image_url: the bytes, checked from their header only."""

    data: bytes
    width: int
    height: int

    def load(self, size: tuple[int, int]) -> Image.Image:
        """Decoded for an output of *size*: no larger than it needs to cover it."""
        try:
            return load_reduced(self.data, image_service().limits, size)
        except (InvalidImage, UnsupportedFormat, ImageTooLarge) as exc:
            raise InvalidParameter(f"The background image: {exc}", "failed_to_read_image") from None


def background_picture(
    fields: Mapping[str, Any], blobs: Mapping[str, bytes], params: Params
) -> BackgroundPicture | None:
    """The picture for bg_image_file / bg_image_url; at most one background source.

    Only its header is read here: it is decoded while the removal holds its admission, which
    reserves what the decode costs (a flat 7000x7000 PNG is 160 KB and 200 MB decoded).
    """
    url = params.bg_image_url
    sources = [s for s in (blobs.get("bg_image_file"), url, params.bg_color) if s]
    if len(sources) > 1:
        raise InvalidParameter(
            "Multiple background sources given: please provide either the bg_color, the "
            "bg_image_url or the bg_image_file parameter.",
            "multiple_bg_sources",
        )
    data = blobs.get("bg_image_file") or (download(url, "bg") if url else None)
    if data is None:
        return None
    try:
        width, height = probe(data, image_service().limits)
    except (InvalidImage, UnsupportedFormat, ImageTooLarge) as exc:
        raise InvalidParameter(f"The background image: {exc}", "failed_to_read_image") from None
    return BackgroundPicture(data, width, height)


def _cut(
    source: bytes, params: Params, background: BackgroundPicture | None
) -> tuple[Rendered, float | None]:
    settings = app_settings()

    def draw(photo: Photo, alpha: Image.Image) -> Rendered:
        return render(
            photo,
            alpha,
            params,
            background_image=background.load if background else None,
            png_compression=settings.png_compression,
        )

    def extra_cost(width: int, height: int) -> int:
        """The output's canvases and the background picture, beyond the removal."""
        canvas = params.canvas_bound(width, height)
        cost = render_cost(canvas) if canvas > width * height or params.format == "zip" else 0
        flattened = background is not None or params.bg_color is not None
        encoding = {"jpg": "jpeg", "webp": "webp"}.get(params.format, "png")
        cost += output_cost(
            canvas, format=encoding, flattened=flattened, mask_only=params.channels == "alpha"
        )
        if background is not None:
            cost += decode_cost(background.width, background.height)
        return cost

    try:
        return image_service().cut(source, draw, extra_cost)
    except ImageTooLarge as exc:  # bytes were checked already: this is the pixel count
        raise InvalidParameter(str(exc), "resolution_too_high") from None


def result_response(
    rendered: Rendered, params: Params, cost: float, confidence: float | None = None
) -> Response:
    """The image (or remove.bg's JSON), with remove.bg's headers."""
    if _wants_json():
        top, left, width, height = rendered.foreground
        response = jsonify(
            data={
                "result_b64": base64.b64encode(rendered.data).decode("ascii"),
                "foreground_top": top,
                "foreground_left": left,
                "foreground_width": width,
                "foreground_height": height,
            }
        )
    else:
        response = Response(rendered.data, mimetype=rendered.media_type)
    response.headers.update(result_headers(rendered, params, cost, confidence))
    return response


def result_headers(
    rendered: Rendered, params: Params, cost: float, confidence: float | None = None
) -> dict[str, str]:
    """remove.bg's result headers, and ours: ``X-Cutout-Confidence`` when the engine scored
    the cut-out (in [0, 1]; below the review threshold, ``X-Cutout-Needs-Review: true``)."""
    top, left, width, height = rendered.foreground
    headers = {
        "X-Width": str(rendered.width),
        "X-Height": str(rendered.height),
        "X-Credits-Charged": credits_text(cost),
        "X-Foreground-Top": str(top),
        "X-Foreground-Left": str(left),
        "X-Foreground-Width": str(width),
        "X-Foreground-Height": str(height),
        "Cache-Control": "private, no-store",
    }
    if confidence is not None:
        headers["X-Cutout-Confidence"] = f"{confidence:.3f}"
        headers["X-Cutout-Needs-Review"] = "true" if needs_review(confidence) else "false"
    if params.type_level != "none":
        # No type detection here: the type the client named, else "other" (see the README).
        headers["X-Type"] = "other" if params.type == "auto" else _x_type(params.type)
    return headers


def _x_type(kind: str) -> str:
    return {"graphic": "graphics"}.get(kind, kind)


def credits_text(value: float) -> str:
    """``1`` for whole numbers (clients parse it with int()), ``0.25`` otherwise."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _wants_json() -> bool:
    accept = request.accept_mimetypes
    return accept["application/json"] > max(accept["image/png"], accept["image/jpeg"])


@bp.get("/account")
def account() -> ResponseReturnValue:
    """The key's credits in remove.bg's shape, plus our own usage figures."""
    key = current_key()
    total = UNLIMITED_CREDITS if key.credits_left is None else key.credits_left
    return jsonify(
        data={
            "attributes": {
                "credits": {"total": total, "subscription": total, "payg": 0, "enterprise": 0},
                "api": {"free_calls": 0, "sizes": "all"},
                "usage": {
                    "credits_used": key.credits_used,
                    "allowance": key.credits,  # null: unlimited
                    "key_id": key.id,
                    "key_name": key.name,
                },
            }
        }
    )


@bp.post("/improve")
@body_limit(bodies.base64_upload)
def improve() -> ResponseReturnValue:
    """Keep an image for the operator to look at (remove.bg's Improvement Program)."""
    key = current_key()
    fields, blobs = payload()
    data = image_source(fields, blobs)
    if len(data) > IMPROVE_MAX_BYTES:
        raise InvalidParameter("File exceeds limit of 12MB.", "file_too_large")
    media_type = _media_type(data)
    improvement_id = keys().store.add_improvement(
        Improvement(
            key_id=key.id,
            user_id=key.user_id,
            image_filename=_text(fields.get("image_filename")),
            tag=_text(fields.get("tag")),
            media_type=media_type,
            data=data,
        ),
        app_settings().improvement_quota,
    )
    return jsonify(id=improvement_id)


def _media_type(data: bytes) -> str:
    """The image's type from its bytes; only images are kept."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as image:
            return Image.MIME.get(image.format or "", "application/octet-stream")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise InvalidParameter(
            "Invalid file type: expected an image (jpg, png, webp...).", "invalid_file_type"
        ) from None
