"""The page's URL field: rate-limited per address, and the download caps' answers."""

from __future__ import annotations

from flask.testing import FlaskClient

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.extensions import close_app
from tests.web.conftest import Actions


def test_from_url_is_rate_limited_per_address(
    web_settings: Settings, shared_engine: Engine
) -> None:
    app = create_app(web_settings.replace(url_rate_limit="2/minute"), engine=shared_engine)
    client: FlaskClient = app.test_client()
    token = Actions(client).token()

    def post() -> tuple[int, dict[str, str]]:
        response = client.post(
            "/from-url", json={"url": "http://127.0.0.1:1/x.png"}, headers={"X-CSRFToken": token}
        )
        return response.status_code, response.get_json()

    # refused as private addresses, but counted: the limit is on asking
    assert [post()[0] for _ in range(2)] == [400, 400]
    status, body = post()
    assert status == 429 and body["error"] == "rate_limit_exceeded"
    other = app.test_client()  # a new cookie is a new user, not a new budget
    other_token = Actions(other).token()
    response = other.post(
        "/from-url", json={"url": "http://127.0.0.1:1/x.png"}, headers={"X-CSRFToken": other_token}
    )
    assert response.status_code == 429
    close_app(app)
