"""/v1.0 through Flask's client on the real model: parameters, headers, and every error path."""

from __future__ import annotations

import base64
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from cutout.engine.base import Admission
from cutout.errors import EngineBusy
from cutout.imaging.confidence import REVIEW_BELOW
from tests.api.conftest import Key, MakeKey
from tests.helpers import LocalServer, encode, synthetic_photo

pytestmark = pytest.mark.model


def post(client: FlaskClient, key: Key | None, **fields: Any) -> Any:
    headers = dict(key.headers) if key else {}
    headers.update(fields.pop("headers", {}))
    files = {}
    for name in ("image_file", "bg_image_file"):
        if name in fields:
            files[name] = (io.BytesIO(fields.pop(name)), fields.pop(f"{name}_name", "photo.jpg"))
    return client.post("/v1.0/removebg", data={**fields, **files}, headers=headers)


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def errors(response: Any) -> tuple[int, str]:
    body = response.get_json()
    assert set(body) == {"errors"} and set(body["errors"][0]) == {"title", "code", "detail"}
    return response.status_code, body["errors"][0]["code"]


def test_default_is_a_preview_png_with_remove_bgs_headers(
    client: FlaskClient, key: Key, photo: Path
) -> None:
    response = post(client, key, image_file=photo.read_bytes())

    assert response.status_code == 200 and response.mimetype == "image/png"
    image = Image.open(io.BytesIO(response.data))
    assert image.mode == "RGBA" and image.width * image.height <= 250_000
    h = response.headers
    assert (int(h["X-Width"]), int(h["X-Height"])) == image.size
    assert h["X-Credits-Charged"] == "0.25" and h["X-Type"] == "other"
    top, left = int(h["X-Foreground-Top"]), int(h["X-Foreground-Left"])
    width, height = int(h["X-Foreground-Width"]), int(h["X-Foreground-Height"])
    alpha = np.asarray(image.getchannel("A"))
    rows, cols = np.nonzero(alpha > 8)
    assert (top, left, top + height, left + width) == (
        rows.min(),
        cols.min(),
        rows.max() + 1,
        cols.max() + 1,
    )
    assert 0.05 < (alpha > 128).mean() < 0.95  # a subject, not everything or nothing
    assert "Set-Cookie" not in h and "Retry-After" not in h
    assert h["X-RateLimit-Limit"] == "500" and int(h["X-RateLimit-Remaining"]) == 499
    # ours, not remove.bg's: the fused engine's confidence in the cut-out
    score = float(h["X-Cutout-Confidence"])
    assert 0.0 <= score <= 1.0
    assert h["X-Cutout-Needs-Review"] == ("true" if score < REVIEW_BELOW else "false")


def test_what_real_clients_send_is_accepted(client: FlaskClient, key: Key, photo: Path) -> None:
    """The Node CLI's empty fields, word booleans, bare ROI numbers, an anonymous file part."""
    empty = dict.fromkeys(
        ("type_level", "crop_margin", "scale", "position", "channels", "bg_color"), ""
    )
    response = post(
        client,
        key,
        image_file=photo.read_bytes(),
        image_file_name="image_file",
        size="full",
        crop="False",
        add_shadow="True",
        semitransparency="true",
        roi="0 0 100% 100%",
        shadow_type="3D",
        shadow_opacity="50",
        bg_image_file=b"",
        **empty,
    )
    assert response.status_code == 200, response.get_json()
    assert response.headers["X-Credits-Charged"] == "1"
    assert Image.open(io.BytesIO(response.data)).size == size_of(photo)


def test_a_binary_image_file_sent_as_a_plain_field_survives(
    client: FlaskClient, key: Key, photo: Path
) -> None:
    """A multipart part with no filename and no content type: bytes, not text."""
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image_file"\r\n\r\n'.encode()
        + photo.read_bytes()
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="size"\r\n\r\nfull'
        f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/v1.0/removebg",
        data=body,
        headers=key.headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert response.status_code == 200, response.get_json()


def test_json_mode_base64_input_and_zip_output(client: FlaskClient, key: Key, photo: Path) -> None:
    b64 = base64.b64encode(photo.read_bytes()).decode()
    response = client.post(
        "/v1.0/removebg",
        json={"image_file_b64": b64, "format": "zip", "size": "full", "crop": True},
        headers={**key.headers, "Accept": "application/json"},
    )
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert set(data) == {
        "result_b64",
        "foreground_top",
        "foreground_left",
        "foreground_width",
        "foreground_height",
    }
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
    color = Image.open(archive.open("color.jpg"))
    alpha = Image.open(archive.open("alpha.png"))
    assert color.mode == "RGB" and alpha.mode == "L" and color.size == alpha.size
    assert (data["foreground_left"], data["foreground_top"]) == (0, 0)  # cropped to the subject
    assert (data["foreground_width"], data["foreground_height"]) == alpha.size


def test_formats_channels_and_backgrounds(client: FlaskClient, key: Key, photo: Path) -> None:
    data = photo.read_bytes()
    jpg = post(client, key, image_file=data, format="auto", bg_color="81d4fa")
    assert jpg.mimetype == "image/jpeg"  # auto: an opaque result is a JPEG
    flat = Image.open(io.BytesIO(jpg.data)).convert("RGB")
    assert flat.getpixel((0, 0)) == pytest.approx((0x81, 0xD4, 0xFA), abs=6)
    mask = post(client, key, image_file=data, channels="alpha")
    assert mask.mimetype == "image/png" and Image.open(io.BytesIO(mask.data)).mode == "L"
    webp = post(
        client,
        key,
        image_file=data,
        format="webp",
        bg_image_file=encode(synthetic_photo(50, 40), "PNG"),
    )
    assert webp.mimetype == "image/webp"
    assert post(client, key, image_file=data, format="jpg").mimetype == "image/jpeg"


def test_roi_crop_margin_scale_and_position(client: FlaskClient, key: Key, photo: Path) -> None:
    data = photo.read_bytes()
    width, height = size_of(photo)
    # Only the left half may be foreground.
    half = post(client, key, image_file=data, size="full", roi=f"0 0 {width // 2} {height}")
    alpha = np.asarray(Image.open(io.BytesIO(half.data)).getchannel("A"))
    assert alpha[:, width // 2 + 1 :].max() == 0
    # A crop with a 20 px margin on every side, reaching past the photo: transparent padding.
    cropped = post(client, key, image_file=data, size="full", crop="true", crop_margin="20px")
    h = cropped.headers
    assert (int(h["X-Foreground-Top"]), int(h["X-Foreground-Left"])) == (20, 20)
    assert int(h["X-Width"]) == int(h["X-Foreground-Width"]) + 40
    # 50% scale, centred: the subject fills half the canvas along its limiting side.
    scaled = post(client, key, image_file=data, size="full", scale="50%")
    sw, sh = int(scaled.headers["X-Foreground-Width"]), int(scaled.headers["X-Foreground-Height"])
    assert max(sw / width, sh / height) == pytest.approx(0.5, abs=0.02)
    left = int(scaled.headers["X-Foreground-Left"])
    assert left == pytest.approx((width - sw) / 2, abs=2)
    corner = post(client, key, image_file=data, size="full", position="0% 100%")
    assert int(corner.headers["X-Foreground-Left"]) == 0
    bottom = int(corner.headers["X-Foreground-Top"]) + int(corner.headers["X-Foreground-Height"])
    assert bottom == height


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({}, "missing_source"),
        ({"image_base64": "aGVsbG8="}, "missing_source"),  # a wrong field name, as one client sends
        (
            {"image_file_b64": "aGVsbG8=", "image_url": "http://example.com/x.jpg"},
            "multiple_sources",
        ),
        ({"image_file_b64": "not base64!"}, "failed_to_read_image"),
        ({"image_file_b64": base64.b64encode(b"GIF87a nonsense").decode()}, "failed_to_read_image"),
        ({"image_url": "ftp://example.com/x.jpg"}, "invalid_image_url"),
        ({"image_url": "http://169.254.169.254/latest/meta-data"}, "invalid_image_url"),
        ({"image_url": "http://10.0.0.1/x.jpg"}, "invalid_image_url"),
        ({"image_url": "http://127.0.0.1:9/unreachable.jpg"}, "failed_image_download"),
        ({"image_file_b64": "aGVsbG8=", "size": "huge"}, "invalid_size"),
        ({"image_file_b64": "aGVsbG8=", "format": "gif"}, "invalid_format"),
        ({"image_file_b64": "aGVsbG8=", "channels": "rgb"}, "invalid_channels"),
        ({"image_file_b64": "aGVsbG8=", "roi": "0 0 100%"}, "invalid_roi"),
        ({"image_file_b64": "aGVsbG8=", "crop_margin": "60%"}, "invalid_crop_margin"),
        ({"image_file_b64": "aGVsbG8=", "crop_margin": "1px 2px 3px"}, "invalid_crop_margin"),
        ({"image_file_b64": "aGVsbG8=", "scale": "5%"}, "invalid_scale"),
        ({"image_file_b64": "aGVsbG8=", "position": "left"}, "invalid_position"),
        ({"image_file_b64": "aGVsbG8=", "bg_color": "nocolour"}, "invalid_bg_color"),
        ({"image_file_b64": "aGVsbG8=", "crop": "maybe"}, "invalid_crop"),
        ({"image_file_b64": "aGVsbG8=", "semitransparency": "2"}, "invalid_semitransparency"),
        (
            {"image_file_b64": "aGVsbG8=", "bg_color": "fff", "bg_image_url": "http://x.example/a"},
            "multiple_bg_sources",
        ),
        (
            {"image_file_b64": "aGVsbG8=", "bg_image_url": "http://192.168.1.1/bg.jpg"},
            "invalid_bg_image_url",
        ),
    ],
)
def test_bad_input_is_400_with_remove_bgs_code(
    client: FlaskClient, key: Key, fields: dict[str, str], code: str
) -> None:
    assert errors(post(client, key, **fields)) == (400, code)


def test_roi_outside_the_image_or_empty(client: FlaskClient, key: Key) -> None:
    data = encode(synthetic_photo(64, 48), "PNG")
    assert errors(post(client, key, image_file=data, roi="0 0 65 48")) == (
        400,
        "roi_exceeds_bounds",
    )
    assert errors(post(client, key, image_file=data, roi="10 10 10 20")) == (
        400,
        "roi_region_empty",
    )


def test_no_foreground_is_unknown_foreground(client: FlaskClient, key: Key) -> None:
    blank = encode(Image.new("RGB", (200, 150), "white"), "PNG")
    assert errors(post(client, key, image_file=blank)) == (400, "unknown_foreground")


def test_too_large_and_too_many_pixels(app: Flask, client: FlaskClient, key: Key) -> None:
    settings = app.config["CUTOUT"]
    big = b"\xff\xd8" + b"0" * (settings.max_upload_bytes + 1)
    assert errors(post(client, key, image_file_b64=base64.b64encode(big).decode())) == (
        400,
        "file_too_large",
    )
    app.extensions["cutout.service"].limits = type(app.extensions["cutout.service"].limits)(
        settings.max_upload_bytes, 1000
    )
    assert errors(post(client, key, image_file=encode(synthetic_photo(64, 48), "PNG"))) == (
        400,
        "resolution_too_high",
    )


def test_unsupported_file_type(client: FlaskClient, key: Key) -> None:
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
    assert errors(post(client, key, image_file=pdf))[0] == 400


def test_a_url_on_an_allowed_network_is_fetched(client: FlaskClient, key: Key, photo: Path) -> None:
    routes = {
        ("GET", "/p.jpg"): lambda h, b: (200, {"Content-Type": "image/jpeg"}, photo.read_bytes()),
        ("GET", "/missing.jpg"): lambda h, b: (404, {}, b"no"),
    }
    with LocalServer(routes) as server:
        ok = post(client, key, image_url=f"{server.url}/p.jpg")
        missing = post(client, key, image_url=f"{server.url}/missing.jpg")
        bg = post(
            client, key, image_url=f"{server.url}/p.jpg", bg_image_url=f"{server.url}/missing.jpg"
        )
    assert ok.status_code == 200
    assert errors(missing) == (400, "failed_image_download")
    assert errors(bg) == (400, "failed_bg_download")


@pytest.mark.parametrize(
    ("headers", "title"),
    [
        ({}, "Missing API Key"),
        ({"X-Api-Key": "cut_" + "A" * 43}, "API Key invalid"),
        ({"Authorization": "Bearer nonsense"}, "API Key invalid"),
    ],
)
def test_missing_or_bad_key_is_403(
    client: FlaskClient, headers: dict[str, str], title: str
) -> None:
    for response in (
        client.post("/v1.0/removebg", data={"image_file_b64": "aGVsbG8="}, headers=headers),
        client.get("/v1.0/account", headers=headers),
    ):
        assert errors(response) == (403, "auth_failed")
        assert response.get_json()["errors"][0]["title"] == title
        assert "Set-Cookie" not in response.headers


def test_bearer_works_and_a_revoked_key_stops_at_once(
    app: Flask, client: FlaskClient, key: Key
) -> None:
    assert (
        client.get("/v1.0/account", headers={"Authorization": f"Bearer {key.secret}"}).status_code
        == 200
    )
    app.extensions["cutout.keys"].revoke(key.id)
    assert errors(client.get("/v1.0/account", headers=key.headers)) == (403, "auth_failed")


def test_credits_are_charged_on_success_only_and_402_when_spent(
    client: FlaskClient, make_key: MakeKey, photo: Path
) -> None:
    key = make_key(credits=1.25)
    data = photo.read_bytes()
    account = client.get("/v1.0/account", headers=key.headers).get_json()["data"]["attributes"]
    assert account["credits"]["total"] == 1.25
    assert errors(post(client, key, image_file_b64="bad!"))[0] == 400  # not charged
    assert post(client, key, image_file=data, size="full").headers["X-Credits-Charged"] == "1"
    assert errors(post(client, key, image_file=data, size="full")) == (402, "insufficient_credits")
    # size=auto takes the largest size the credits allow: a preview for the 0.25 left.
    auto = post(client, key, image_file=data, size="auto")
    assert auto.status_code == 200 and auto.headers["X-Credits-Charged"] == "0.25"
    assert errors(post(client, key, image_file=data)) == (402, "insufficient_credits")
    credits = client.get("/v1.0/account", headers=key.headers).get_json()["data"]["attributes"]
    assert credits["credits"]["total"] == 0 and credits["usage"]["credits_used"] == 1.25


def test_a_full_queue_answers_503_busy_with_retry_after(
    app: Flask, client: FlaskClient, key: Key, photo: Path
) -> None:
    full = Admission(slots=1, max_waiting=0, timeout=0.1)
    full.__enter__()  # the one slot is taken and nobody may wait
    app.extensions["cutout.service"].admission = full
    response = post(client, key, image_file=photo.read_bytes())
    assert errors(response) == (503, "busy")
    retry = response.headers["Retry-After"]
    assert retry == str(EngineBusy("").retry_after)  # the gate's hint, not the rate window's
    native = client.post(
        "/api/v1/images",
        data={"name": "x", "image": (io.BytesIO(photo.read_bytes()), "p.jpg")},
        headers=key.headers,
    )
    assert native.status_code == 503 and native.headers["Retry-After"] == retry
    assert native.get_json()["error"] == "busy"


def test_improve_keeps_the_image_for_the_operator(
    client: FlaskClient, key: Key, photo: Path
) -> None:
    response = client.post(
        "/v1.0/improve",
        data={
            "image_file": (io.BytesIO(photo.read_bytes()), "x.jpg"),
            "tag": "batch_1",
            "image_filename": "car.jpg",
        },
        headers=key.headers,
    )
    assert response.status_code == 200 and len(response.get_json()["id"]) == 24
    not_image = client.post(
        "/v1.0/improve", json={"image_file_b64": "aGVsbG8="}, headers=key.headers
    )
    assert errors(not_image) == (400, "invalid_file_type")


def test_improve_stops_at_its_quota(app: Flask, client: FlaskClient, key: Key, photo: Path) -> None:
    """Its only cap used to be 100 a day per key: five 12 MB images grew the database by 58 MB."""
    size = len(photo.read_bytes())
    settings = app.config["CUTOUT"]
    app.config["CUTOUT"] = settings.replace(improve_max_mb_per_key=2.5 * size / 2**20)
    statuses = [
        client.post(
            "/v1.0/improve",
            data={"image_file": (io.BytesIO(photo.read_bytes()), "x.jpg")},
            headers=key.headers,
        )
        for _ in range(3)
    ]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    assert errors(statuses[2]) == (400, "quota_exceeded")
    assert "cutout improvements purge" in statuses[2].get_json()["errors"][0]["detail"]


def test_the_secret_never_reaches_the_logs(
    client: FlaskClient, key: Key, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/v1.0/account", headers=key.headers)
    client.post("/v1.0/removebg", data={"image_file_b64": "bad"}, headers=key.headers)
    assert key.secret not in caplog.text
