"""Regression tests for the faults found by trying the service as a new user and an attacker
(issue 9, section 1), through Flask's test client on the real model and real SQLite.

Faults that need the real HTTP server (gunicorn) are in ``test_live_faults.py``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from pathlib import Path

import pytest
from flask import Flask, Response, jsonify, request
from flask.testing import FlaskClient
from PIL import Image

from cutout.config import Settings
from cutout.errors import ImageTooLarge
from cutout.imaging.compose import OutputFormat, OutputOptions, compose
from cutout.imaging.decode import Photo
from cutout.web.errors import json_only
from tests.helpers import encode, synthetic_photo
from tests.web.conftest import Actions

Size = tuple[int, int]


def stored_files(settings: Settings) -> list[Path]:
    images = settings.data_dir / "images"
    return sorted(p for p in images.rglob("*") if p.is_file()) if images.exists() else []


def header_truncated_jpeg() -> bytes:
    """A JPEG whose large ICC profile (APP2 segments) is cut in half: the file ends inside
    its header, as happens to a photo with a big camera profile cut short in transfer."""
    profile = hashlib.shake_256(b"a large ICC profile").digest(200_000)
    data = encode(synthetic_photo(320, 240), "JPEG", icc_profile=profile)
    return data[: len(data) // 4]


# -- fault 1: a JPEG truncated inside its header ----------------------------------------------


def test_jpeg_truncated_in_its_header_is_invalid_image(
    actions: Actions, web_settings: Settings
) -> None:
    response = actions.upload("cut", header_truncated_jpeg(), json=True)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "invalid_image"
    assert "Truncated File Read" not in body["message"]  # our sentence, not Pillow's
    assert actions.records() == [] and stored_files(web_settings) == []


def test_jpeg_truncated_in_its_header_by_form_gets_our_flash(actions: Actions) -> None:
    response = actions.upload("cut", header_truncated_jpeg())
    assert response.status_code == 302
    (message,) = actions.flashes()
    assert message.startswith("The image data is corrupt or truncated")
    assert "Truncated File Read" not in message


# -- fault 2: deeply nested (or otherwise malformed) JSON --------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 1000 + b"]" * 1000,  # RecursionError inside the json module
        b'{"record_name": ' + b"[" * 1900 + b"]" * 1900 + b"}",  # deep, within the 4 KB
        b'{"record_name": "x"',  # cut short
        b"\xff\xfe not utf-8",
    ],
    ids=["nested-1000", "nested-1900", "truncated", "not-utf8"],
)
def test_malformed_json_bodies_are_400_with_the_usual_shape(
    actions: Actions, client: FlaskClient, body: bytes
) -> None:
    response = client.put(
        "/update/" + "a" * 24,
        data=body,
        headers={"X-CSRFToken": actions.token(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    payload = response.get_json()
    assert set(payload) == {"error", "message"} and payload["error"] == "invalid_json"


def test_any_json_endpoint_gets_the_same_answer(actions: Actions, client: FlaskClient) -> None:
    """The rule lives in the request class: a view that calls get_json() is covered too."""
    app = client.application

    @app.post("/test-only/echo")
    def echo() -> Response:
        return jsonify(request.get_json())

    token = actions.token()

    ok = client.post("/test-only/echo", json={"a": [1]}, headers={"X-CSRFToken": token})
    assert ok.status_code == 200 and ok.get_json() == {"a": [1]}
    deep = client.post(
        "/test-only/echo",
        data=b"[" * 5000 + b"]" * 5000,
        headers={"X-CSRFToken": token, "Content-Type": "application/json"},
    )
    assert deep.status_code == 400 and deep.get_json()["error"] == "invalid_json"


# -- fault 6: per-user responses carry caching rules -------------------------------------------


def test_per_user_pages_and_json_are_not_cached(actions: Actions, client: FlaskClient) -> None:
    page = client.get("/")
    data = client.get("/", headers={"Accept": "application/json"})
    for response in (page, data):
        directives = {d.strip() for d in response.headers["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= directives
        vary = {v.strip().lower() for v in response.headers.get("Vary", "").split(",")}
        assert {"cookie", "accept"} <= vary  # per user, and HTML or JSON by Accept


def test_images_keep_their_private_etag_caching(actions: Actions, photo: Path) -> None:
    actions.upload("cat", photo.read_bytes())
    record = actions.records()[0]
    response = actions.client.get(str(record["processed_url"]))
    assert response.headers["ETag"]
    directives = {d.strip() for d in response.headers["Cache-Control"].split(",")}
    assert "private" in directives and "no-store" not in directives


# -- fault 7: control characters in names ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("cat\x00dog", "catdog"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("bell\x07 and\x7f del", "bell and del"),
        ("a\u202eevil", "aevil"),  # right-to-left override: spoofs how the name reads
        ("tab\tand\nnewline", "tab and newline"),  # whitespace is folded, as before
        ("family \U0001f468\u200d\U0001f469\u200d\U0001f467", "family 👨‍👩‍👧"),  # ZWJ stays
    ],
)
def test_control_characters_are_stripped_from_names(
    actions: Actions, photo: Path, raw: str, stored: str
) -> None:
    actions.upload("keep", photo.read_bytes())
    record_id = str(actions.records()[0]["_id"])
    response = actions.rename(record_id, raw)
    assert response.status_code == 200
    assert actions.records()[0]["image_name"] == stored


def test_a_name_of_only_control_characters_is_refused(actions: Actions, photo: Path) -> None:
    response = actions.upload("\x00\x01\x02", photo.read_bytes(), json=True)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_name"


def test_a_lone_surrogate_in_a_json_name_is_not_a_500(actions: Actions, photo: Path) -> None:
    actions.upload("keep", photo.read_bytes())
    record_id = str(actions.records()[0]["_id"])
    response = actions.client.put(
        f"/update/{record_id}",
        data=b'{"record_name": "a\\ud800b"}',
        headers={"X-CSRFToken": actions.token(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert actions.records()[0]["image_name"] == "ab"


# -- fault 8: overlong URLs are refused in the caller's language -------------------------------


def test_overlong_url_is_414_json_for_programs(client: FlaskClient) -> None:
    response = client.get("/?" + "x" * 5000, headers={"Accept": "application/json"})
    assert response.status_code == 414
    assert response.get_json()["error"] == "uri_too_long"


def test_overlong_url_is_414_html_for_browsers(client: FlaskClient) -> None:
    response = client.get("/images/" + "x" * 5000 + "/processed")
    assert response.status_code == 414 and response.mimetype == "text/html"


def test_json_only_prefixes_get_json_errors_whatever_the_accept_header(app: Flask) -> None:
    """What an API blueprint registers: its 404s and 405s are JSON even for a browser."""
    json_only(app, "/api/")
    client = app.test_client()
    missing = client.get("/api/v1/nothing", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    page = client.get("/nothing", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"


# -- found by `make fuzz`: images wider than JPEG or WebP can hold ------------------------------


def test_a_tiff_wider_than_jpeg_allows_is_kept_as_png(actions: Actions) -> None:
    """Originals browsers cannot show (TIFF, HEIC) are re-encoded; JPEG stops at 65500 px a
    side, and a 70000x2 TIFF made that re-encoding fail with a 500."""
    data = encode(Image.new("RGB", (70_000, 2), (40, 90, 160)), "TIFF")
    response = actions.upload("wide", data, json=True)
    assert response.status_code == 201, response.get_data(as_text=True)
    record = response.get_json()
    assert record["original"]["media_type"] == "image/png"
    stored = actions.client.get(record["original_url"]).get_data()
    with Image.open(io.BytesIO(stored)) as original:
        assert original.format == "PNG" and original.size == (70_000, 2)


@pytest.mark.parametrize(("fmt", "size"), [("jpeg", (65_501, 2)), ("webp", (2, 16_384))])
def test_an_output_too_large_for_its_format_is_our_error(fmt: OutputFormat, size: Size) -> None:
    photo = Photo(rgb=Image.new("RGB", size), alpha=None, format="PNG")
    with pytest.raises(ImageTooLarge, match=f"{fmt.upper()} holds at most .* Write PNG"):
        compose(photo, Image.new("L", size, 255), OutputOptions(format=fmt))


def cmyk_tiff_claiming_8_samples() -> bytes:
    """A CMYK TIFF whose SamplesPerPixel tag says 8: Pillow logs an ERROR, then refuses it."""
    data = bytearray(encode(synthetic_photo(64, 48).convert("CMYK"), "TIFF"))
    (ifd,) = struct.unpack("<I", data[4:8])
    (entries,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(entries):
        at = ifd + 2 + 12 * i
        if struct.unpack("<H", data[at : at + 2])[0] == 277:  # SamplesPerPixel
            data[at + 8 : at + 10] = struct.pack("<H", 8)
    return bytes(data)


def test_pillows_complaints_about_a_bad_upload_are_not_error_logs(
    actions: Actions, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused upload is the user's bad input (a 400), not an error for anyone to be paged
    about; Pillow logged its own 'More samples per pixel than can be decoded' at ERROR."""
    caplog.set_level(logging.INFO)  # what production logs
    response = actions.upload("tiff", cmyk_tiff_claiming_8_samples(), json=True)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_image"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
