"""/v1.0's HTTP details as remove.bg's: CORS for pages, JSON labelled UTF-8, free preflights.

(Body draining needs gunicorn: see ``test_clients.py``.)
"""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.api.conftest import Key

PREFLIGHT = {
    "Origin": "https://shop.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key, content-type",
}


def test_every_v1_0_answer_allows_any_origin_errors_included(client: FlaskClient, key: Key) -> None:
    answers = [
        client.get("/v1.0/account", headers=key.headers),
        client.get("/v1.0/account", headers={"X-Api-Key": "cut_wrong"}),
        client.post("/v1.0/removebg", headers=key.headers, data={"size": "preview"}),
        client.get("/v1.0/removebg", headers=key.headers),  # 405
        client.get("/v1.0/nothing-here"),
    ]
    assert [a.status_code for a in answers] == [200, 403, 400, 405, 404]
    for answer in answers:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "X-Credits-Charged" in answer.headers["Access-Control-Expose-Headers"]
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        assert answer.get_json() is not None


def test_a_preflight_needs_no_key_and_costs_no_quota(client: FlaskClient, key: Key) -> None:
    before = client.get("/v1.0/account", headers=key.headers).headers["X-RateLimit-Remaining"]
    for path in ("/v1.0/removebg", "/v1.0/account", "/v1.0/improve"):
        answer = client.options(path, headers=PREFLIGHT)
        assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"
        assert answer.headers["Access-Control-Allow-Headers"] == "x-api-key, content-type"
        assert "POST" in answer.headers["Access-Control-Allow-Methods"]
        assert "X-RateLimit-Remaining" not in answer.headers
    after = client.get("/v1.0/account", headers=key.headers).headers["X-RateLimit-Remaining"]
    assert int(after) == int(before) - 1  # only the second account call counted


def test_the_native_api_and_the_page_stay_same_origin(client: FlaskClient, key: Key) -> None:
    for answer in (
        client.get("/api/v1/images", headers=key.headers),
        client.options("/api/v1/images", headers=PREFLIGHT),
        client.get("/"),
    ):
        assert "Access-Control-Allow-Origin" not in answer.headers
    assert client.get("/api/v1/images", headers=key.headers).mimetype == "application/json"
