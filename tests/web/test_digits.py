"""Numbers from requests and remote servers: digits 0-9 only, else a 400 naming the field.

A superscript two passes ``str.isdigit()`` and fails ``int()``: that gave a 500 on the studio's
export and on every surface that downloads a URL (its Content-Length). Other scripts' digits
(Arabic-Indic, fullwidth) were taken silently by ``int``, ``float`` and ``\\d``.
"""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cutout.errors import InvalidParameter
from cutout.numbers import header_int, parse_float, parse_int
from tests.web.conftest import Actions
from tests.web.test_studio_pages import post_json, upload, url_app

__all__ = ["url_app"]

#: Superscript two (isdigit, not int), Arabic-Indic twelve, fullwidth twelve, Devanagari five.
OTHER_DIGITS = ["²", "١٢", "\uff11\uff12", "५"]


@pytest.mark.parametrize("text", [*OTHER_DIGITS, "1_000", "0x10", "", "1e400", "nan", "∞"])
def test_only_ascii_numbers_parse(text: str) -> None:
    with pytest.raises(InvalidParameter, match="max_side"):
        parse_int(text, "max_side")
    with pytest.raises(InvalidParameter, match="blur"):
        parse_float(text, "blur")
    assert header_int(text) is None


def test_ascii_numbers_do() -> None:
    assert parse_int(" 12 ", "n") == 12 and parse_int("-3", "n") == -3
    assert parse_float(".5", "x") == 0.5 and parse_float("1e3", "x") == 1000.0
    assert header_int("1024") == 1024 and header_int("+1") is None and header_int(None) is None


def test_studio_export_numbers(actions: Actions, client: FlaskClient, photo: Path) -> None:
    record = upload(actions, photo)
    for field in ("max_side", "blur"):
        for digits in OTHER_DIGITS:
            query = f"?{field}={digits}" + ("&background=blur" if field == "blur" else "")
            response = client.get(
                f"/records/{record['_id']}/export{query}", headers={"Accept": "application/json"}
            )

            assert response.status_code == 400, (field, digits)
            assert field in response.get_json()["message"]


@pytest.mark.parametrize("digits", OTHER_DIGITS)
@pytest.mark.parametrize(
    ("field", "template"),
    [
        ("scale", "{}%"),
        ("position", "{}%"),
        ("roi", "0 0 {} 10"),
        ("crop_margin", "{}px"),
        ("bg_color", "{},0,0"),
    ],
)
def test_remove_bg_numbers(
    app: Flask, client: FlaskClient, photo: Path, digits: str, field: str, template: str
) -> None:
    _, secret = app.extensions["cutout.keys"].create("user-a", "digits")
    response = client.post(
        "/v1.0/removebg",
        data={
            "image_file": (io.BytesIO(photo.read_bytes()), "p.jpg"),
            field: template.format(digits),
        },
        headers={"X-Api-Key": secret},
    )

    assert response.status_code == 400
    error = response.get_json()["errors"][0]
    assert error["code"] == f"invalid_{field}" or field in error["detail"], error


@pytest.mark.parametrize("digits", OTHER_DIGITS)
def test_native_api_numbers(app: Flask, client: FlaskClient, photo: Path, digits: str) -> None:
    _, secret = app.extensions["cutout.keys"].create("user-a", "digits")
    headers = {"X-Api-Key": secret}

    listed = client.get(f"/api/v1/images?page={digits}", headers=headers)
    made = client.post(
        "/api/v1/images",
        data={"name": "x", "margin": digits, "image": (io.BytesIO(photo.read_bytes()), "p.jpg")},
        headers=headers,
    )

    assert listed.status_code == 400 and "page" in listed.get_json()["message"]
    assert made.status_code == 400 and "margin" in made.get_json()["message"]


@pytest.fixture
def odd_length_host() -> Iterator[str]:
    """A server whose Content-Length is a superscript two."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "²")
            self.end_headers()
            self.wfile.write(b"\xff\xd8")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
    server.shutdown()
    server.server_close()


def test_a_remote_content_length_in_other_digits_is_a_clear_400(
    url_app: Flask, odd_length_host: str
) -> None:
    actions = Actions(url_app.test_client())

    response = post_json(actions, "/from-url", {"url": odd_length_host})

    assert response.status_code == 400
    assert "invalid Content-Length" in response.get_json()["message"]
