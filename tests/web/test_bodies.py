"""Every endpoint reads at most the body it needs, and refuses a larger one before reading it."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cutout.config import Settings
from cutout.web import bodies
from tests.web.conftest import Actions

MB = 1024 * 1024


def a_job(settings: Settings) -> int:
    """A batch job's photos (files or a zip), up to the job size limit."""
    return settings.job_max_bytes + bodies.FORM_OVERHEAD


#: The endpoints that take more than a small body, and why. A new one must be added here on
#: purpose: the default for everything else is bodies.SMALL.
LARGE = {
    "web.create": bodies.upload,  # a photo
    "studio.export": bodies.upload,  # a background picture
    "studio.save_edit": lambda _settings: bodies.MIB,  # strokes
    "removebg.removebg": bodies.two_uploads,  # a photo and a background, maybe base64
    "removebg.improve": bodies.base64_upload,
    "api.create_image": bodies.base64_upload,
    "page_jobs.create_job": a_job,
    "api.create_job": a_job,
}
SMALLER = {"web.update": 4 * bodies.KIB}


def writable_endpoints(app: Flask) -> dict[str, tuple[str, str]]:
    """endpoint -> (method, a URL for it) for every route that takes a body."""
    found = {}
    for rule in app.url_map.iter_rules():
        methods = (rule.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}
        if not methods or rule.endpoint == "static":
            continue
        url = rule.rule
        for argument in rule.arguments:
            url = url.replace(f"<string:{argument}>", "a" * 24).replace(f"<{argument}>", "x")
        found[rule.endpoint] = (sorted(methods)[0], url)
    return found


def test_every_endpoint_has_a_limit_that_fits_what_it_takes(app: Flask) -> None:
    settings: Settings = app.config["CUTOUT"]
    with app.test_request_context():
        for endpoint in writable_endpoints(app):
            expected = LARGE.get(endpoint) or SMALLER.get(endpoint) or bodies.SMALL
            want = expected(settings) if callable(expected) else expected
            assert bodies.limit_for(endpoint, settings) == want, endpoint


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(
    app: Flask, client: FlaskClient
) -> None:
    """The whole class: every route that takes a body answers 413 from Content-Length alone
    (the body is a promise the test never keeps: nothing could have read it)."""
    settings: Settings = app.config["CUTOUT"]
    for endpoint, (method, url) in writable_endpoints(app).items():
        with app.test_request_context():
            limit = bodies.limit_for(endpoint, settings)
        started = time.perf_counter()
        response = client.open(
            url,
            method=method,
            input_stream=_NeverRead(),
            content_type="application/json",
            environ_overrides={"CONTENT_LENGTH": str(limit + 1)},
        )
        if url.startswith("/v1.0/"):  # remove.bg answers every unusable input with 400
            assert response.status_code == 400, endpoint
            assert response.get_json()["errors"][0]["code"] == "file_too_large"
        else:
            assert response.status_code == 413, (endpoint, response.get_data(as_text=True))
        assert time.perf_counter() - started < 1.0, endpoint


class _NeverRead:
    """A request body that fails the test if anything reads it."""

    def read(self, *_args: object) -> bytes:
        raise AssertionError("the body was read")

    readline = read

    def tell(self) -> int:
        return 0

    def seek(self, *_args: object) -> int:
        return 0


def test_a_26_mb_stroke_list_is_refused_at_once(actions: Actions, client: FlaskClient) -> None:
    """It used to be parsed first: 10.7 s and 681 MB more, then a 400."""
    body = b'{"strokes": [' + b'{"mode":"erase","radius":0.1,"points":[[0.5,0.5]]},' * 520_000
    started = time.perf_counter()

    response = client.post(
        "/records/" + "a" * 24 + "/edits",
        data=body,
        headers={"X-CSRFToken": actions.token(), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.get_json()["error"] == "body_too_large"
    assert "at most 1 MB" in response.get_json()["message"]
    assert time.perf_counter() - started < 1.0


def test_strokes_for_another_users_record_are_not_parsed(
    actions: Actions, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(_payload: object) -> None:
        raise AssertionError("parsed before the record was checked")

    monkeypatch.setattr("cutout.web.studio.parse_strokes", never)
    strokes = [{"mode": "erase", "radius": 0.1, "points": [[0.5, 0.5]] * 1000}] * 40

    response = client.post(
        "/records/" + "a" * 24 + "/edits",
        json={"strokes": strokes},
        headers={"X-CSRFToken": actions.token()},
    )

    assert response.status_code == 404


def test_a_rename_takes_a_few_kilobytes(actions: Actions, client: FlaskClient) -> None:
    """PUT /update with 25 MB raised a worker's peak by 519 MB."""
    name = "x" * (25 * MB)
    response = client.put(
        "/update/" + "a" * 24,
        data=json.dumps({"record_name": name}),
        headers={"X-CSRFToken": actions.token(), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert "at most 4 KB" in response.get_json()["message"]


@pytest.mark.parametrize("shape", ["arrays", "numbers"])
def test_json_of_many_small_values_is_refused_before_parsing(
    app: Flask, client: FlaskClient, shape: str
) -> None:
    """A body within the upload limit, but made of a million tiny values, grows twentyfold
    when parsed: the native API refuses it from a count of its separators, in milliseconds
    and without the memory."""
    service = app.extensions["cutout.keys"]
    _key, secret = service.create("user-a", "test key")
    filler = b"[]," if shape == "arrays" else b"1,"
    body = b'{"name": "x", "image_b64": "AAAA", "extra": [' + filler * (8 * MB) + b"0]}"
    tracemalloc.start()
    try:
        started = time.perf_counter()
        response = client.post(
            "/api/v1/images",
            data=body,
            headers={"X-Api-Key": secret, "Content-Type": "application/json"},
        )
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 400
    assert "too many values" in response.get_json()["message"]
    assert elapsed < 2.0
    assert peak < 3 * len(body)  # the body itself and a copy, not its parsed form
