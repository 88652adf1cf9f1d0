"""The ObjectCut engine against a local server that follows the RapidAPI/ObjectCut contract.

ObjectCut is a paid external API: this stand-in is the only fake in the engine tests. It keeps
the contract's shapes (docs/api-contracts.md section 1): form-urlencoded input, HTTP 200 with an
``error`` flag and ``error_id`` codes, gateway 403/429 with ``{"message"}``.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.parse
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cutout.engine.objectcut import MAX_SIDE, ObjectCutEngine
from cutout.errors import ConfigError, RemoteEngineError
from cutout.imaging.compose import OutputOptions
from cutout.imaging.decode import Limits
from cutout.pipeline import remove_background
from tests.helpers import LocalServer, encode, free_port, synthetic_photo

KEY = "test-key"
HOST = "background-removal.p.rapidapi.com"


def objectcut_contract(handler: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Behave like RapidAPI's gateway in front of ObjectCut's /remove."""
    if handler.headers.get("X-RapidAPI-Key") != KEY:
        return 403, {}, json.dumps({"message": "You are not subscribed to this API."}).encode()
    if handler.headers.get("Content-Type") != "application/x-www-form-urlencoded":
        return 400, {}, b'{"message": "Bad request"}'
    form = dict(urllib.parse.parse_qsl(body.decode()))
    if ("image_url" in form) == ("image_base64" in form):
        return 200, {}, error_body("003", "Invalid URL or required parameters missing.")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(form["image_base64"]))).convert("RGBA")
    except Exception:
        return 200, {}, error_body("002", "Image is not reachable or the URL is invalid.")
    # The "model": bright pixels are foreground. Deterministic, so tests can check the mask.
    alpha = image.convert("L").point(lambda v: 255 if v > 128 else 0)
    image.putalpha(alpha)
    png = base64.b64encode(encode(image, "PNG")).decode()
    return (
        200,
        {},
        json.dumps(
            {"correlation_id": "c0ffee", "error": False, "response": {"image_base64": png}}
        ).encode(),
    )


def error_body(code: str, message: str) -> bytes:
    return json.dumps(
        {"correlation_id": "c0ffee", "error": True, "error_id": code, "message": message}
    ).encode()


def make_engine(url: str, **kw: Any) -> ObjectCutEngine:
    params: dict[str, Any] = {
        "api_key": KEY,
        "api_host": HOST,
        "endpoint": url + "/remove",
        "timeout": 5.0,
        "retries": 2,
        "backoff": 0.01,
    }
    params.update(kw)
    return ObjectCutEngine(**params)


def test_request_follows_the_contract_and_mask_comes_back() -> None:
    with LocalServer({("POST", "/remove"): objectcut_contract}) as server:
        photo = synthetic_photo()
        mask = make_engine(server.url).predict_mask(photo)
    sent = server.requests[0]
    assert sent.headers["X-RapidAPI-Key"] == KEY and sent.headers["X-RapidAPI-Host"] == HOST
    form = dict(urllib.parse.parse_qsl(sent.body.decode()))
    assert form["output_format"] == "base64" and form["to_remove"] == "background"
    assert mask.shape == (photo.height, photo.width)
    brightness = np.asarray(photo.convert("L"), np.float32)
    # JPEG in transit blurs a few pixels at the threshold; the rest must match exactly
    assert ((mask > 0.5) == (brightness > 128)).mean() > 0.97


def test_big_photos_are_sent_downscaled_and_recomposed_at_full_size() -> None:
    big = synthetic_photo(3000, 1800)
    with LocalServer({("POST", "/remove"): objectcut_contract}) as server:
        result = remove_background(
            encode(big, "JPEG", quality=90),
            make_engine(server.url),
            limits=Limits(10**8, 10**8),
            options=OutputOptions(),
        )
    sent = dict(urllib.parse.parse_qsl(server.requests[0].body.decode()))
    with Image.open(io.BytesIO(base64.b64decode(sent["image_base64"]))) as uploaded:
        assert max(uploaded.size) == MAX_SIDE
    assert (result.output.width, result.output.height) == (3000, 1800)
    assert result.engine == "objectcut"


def test_string_false_error_flag_is_success() -> None:
    png = base64.b64encode(encode(Image.new("RGBA", (8, 8), (1, 2, 3, 255)), "PNG")).decode()
    body = json.dumps(
        {"error": "false", "response": {"image_base64": "data:image/png;base64," + png}}
    ).encode()
    with LocalServer({("POST", "/remove"): lambda h, b: (200, {}, body)}) as server:
        mask = make_engine(server.url).predict_mask(synthetic_photo())
    assert mask.min() == 1.0


@pytest.mark.parametrize(
    ("code", "expected"),
    [("001", "could not process"), ("002", "could not read"), ("003", "rejected")],
)
def test_api_error_ids_become_clear_errors(code: str, expected: str) -> None:
    body = error_body(code, "details from the API")
    with LocalServer({("POST", "/remove"): lambda h, b: (200, {}, body)}) as server:
        with pytest.raises(RemoteEngineError, match=expected):
            make_engine(server.url).predict_mask(synthetic_photo())
        assert len(server.requests) == 1  # API-level errors are not retried


def test_bad_key_is_not_retried() -> None:
    with LocalServer({("POST", "/remove"): objectcut_contract}) as server:
        with pytest.raises(RemoteEngineError, match=r"403.*not subscribed.*X_RAPID_API_KEY"):
            make_engine(server.url, api_key="wrong").predict_mask(synthetic_photo())
        assert len(server.requests) == 1


def test_rate_limit_is_retried_after_the_advertised_delay() -> None:
    answers = iter([(429, {"Retry-After": "1"}, b'{"message": "Too many requests"}')])
    slept: list[float] = []

    def flaky(handler: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        return next(answers, None) or objectcut_contract(handler, body)

    with LocalServer({("POST", "/remove"): flaky}) as server:
        make_engine(server.url, sleep=slept.append).predict_mask(synthetic_photo())
        assert len(server.requests) == 2
    assert slept == [1.0]


def test_server_errors_exhaust_retries_with_backoff() -> None:
    slept: list[float] = []
    with LocalServer({("POST", "/remove"): lambda h, b: (502, {}, b"bad gateway")}) as server:
        with pytest.raises(RemoteEngineError, match="HTTP 502"):
            make_engine(server.url, sleep=slept.append, backoff=0.5).predict_mask(synthetic_photo())
        assert len(server.requests) == 3  # first try + 2 retries
    assert slept == [0.5, 1.0]


def test_timeout_is_an_engine_error() -> None:
    def slow(handler: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        time.sleep(1.0)
        return objectcut_contract(handler, body)

    with (
        LocalServer({("POST", "/remove"): slow}) as server,
        pytest.raises(RemoteEngineError, match="did not answer"),
    ):
        make_engine(server.url, timeout=0.2).predict_mask(synthetic_photo())


def test_unreachable_service_is_an_engine_error() -> None:
    engine = make_engine(f"http://127.0.0.1:{free_port()}", retries=1)
    with pytest.raises(RemoteEngineError, match="Could not reach"):
        engine.predict_mask(synthetic_photo())


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b'{"error": false, "response": {}}',
        b'{"error": false, "response": {"image_base64": "@@@"}}',
        b'{"error": false, "response": {"image_base64": "aGVsbG8="}}',
    ],
)
def test_malformed_answers_are_engine_errors(body: bytes) -> None:
    with (
        LocalServer({("POST", "/remove"): lambda h, b: (200, {}, body)}) as server,
        pytest.raises(RemoteEngineError),
    ):
        make_engine(server.url).predict_mask(synthetic_photo())


def test_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="X_RAPID_API_KEY"):
        ObjectCutEngine(api_key=None, api_host=HOST, endpoint="http://x", timeout=1, retries=0)
