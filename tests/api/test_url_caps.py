"""URL downloads on the APIs: refused at once beyond the caps, in each surface's own shape."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.extensions import close_app
from tests.api.conftest import Key
from tests.test_urlfetch import SilentServer


@pytest.fixture
def capped(api_settings: Settings, shared_engine: Engine) -> Iterator[Flask]:
    settings = api_settings.replace(url_timeout=2.0, url_downloads=2, url_downloads_per_client=1)
    app = create_app(settings, engine=shared_engine)
    yield app
    close_app(app)


def make(app: Flask, user: str) -> Key:
    key, secret = app.extensions["cutout.keys"].create(user, "test key", None)
    return Key(key.id, user, secret)


def test_downloads_beyond_the_caps_are_refused_at_once(capped: Flask) -> None:
    alice, bob, carol = (make(capped, user) for user in ("alice", "bob", "carol"))
    hanging: list[Any] = []
    with SilentServer() as silent:
        url = silent.url + "/a.png"

        def removebg(key: Key) -> None:
            hanging.append(
                capped.test_client().post(
                    "/v1.0/removebg", data={"image_url": url}, headers=key.headers
                )
            )

        running = [threading.Thread(target=removebg, args=(key,)) for key in (alice, bob)]
        for thread in running:
            thread.start()
        time.sleep(0.5)  # both downloads wait on the silent server
        client = capped.test_client()
        started = time.monotonic()
        again = client.post("/v1.0/removebg", data={"image_url": url}, headers=alice.headers)
        busy = client.post(
            "/api/v1/images", json={"name": "n", "image_url": url}, headers=carol.headers
        )
        refused_in = time.monotonic() - started
        for thread in running:
            thread.join()
    assert refused_in < 0.5
    assert again.status_code == 429 and again.headers["Retry-After"]
    assert again.get_json()["errors"][0]["code"] == "rate_limit_exceeded"
    assert busy.status_code == 503 and busy.headers["Retry-After"]
    assert busy.get_json()["error"] == "busy"
    for response in hanging:  # ended by the deadline, as remove.bg's download failure
        assert response.status_code == 400
        assert response.get_json()["errors"][0]["code"] == "failed_image_download"
