"""Web fixtures: the real app (real model, real SQLite in tmp_path) and a test client."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import TestResponse, encode_multipart

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import BoundedEngine, Engine
from cutout.engine.fused import FusedEngine
from cutout.extensions import close_app
from tests.conftest import Photos


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return settings.replace(user_limit=3)


@pytest.fixture
def shared_engine(web_engine: FusedEngine) -> Engine:
    """The real model behind the same admission control the app builds."""
    return BoundedEngine(web_engine, slots=1, max_waiting=4, timeout=60)


@pytest.fixture
def app(web_settings: Settings, shared_engine: Engine) -> Iterator[Flask]:
    app = create_app(web_settings, engine=shared_engine)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def photo(photos: Photos, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real photo, as phones save them: the coffee cup (600x400, CC0) as a JPEG."""
    path = tmp_path_factory.mktemp("photo") / "coffee.jpg"
    with Image.open(photos.named("coffee")) as image:
        image.save(path, "JPEG", quality=90)
    return path


@dataclass
class Actions:
    """What a browser does, through the test client: read the token, upload, rename, delete."""

    client: FlaskClient

    def token(self) -> str:
        page = self.client.get("/").get_data(as_text=True)
        match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
        assert match, "the page has no csrf-token meta tag"
        return match.group(1)

    def upload(
        self,
        name: str,
        data: bytes | None,
        filename: str = "photo.jpg",
        *,
        json: bool = False,
        token: str | None = None,
    ) -> TestResponse:
        form: dict[str, object] = {"name": name, "csrf_token": token or self.token()}
        if data is not None:
            form["image"] = FileStorage(
                io.BytesIO(data), filename=filename, content_type="application/octet-stream"
            )
        headers = {"Accept": "application/json"} if json else {}
        # Encoded in memory: the test client's own encoder spools big bodies to a temp file
        # that stays open when the app refuses the request unread (413).
        boundary, body = encode_multipart(MultiDict(form))
        return self.client.post(
            "/",
            data=body,
            headers=headers,
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    def records(self) -> list[dict[str, object]]:
        body = self.client.get("/", headers={"Accept": "application/json"}).get_json()
        records: list[dict[str, object]] = body["records"]
        return records

    def rename(self, record_id: str, name: object, token: str | None = None) -> TestResponse:
        return self.client.put(
            f"/update/{record_id}",
            json={"record_id": record_id, "record_name": name},
            headers={"X-CSRFToken": token or self.token()},
        )

    def delete(self, record_id: str, token: str | None = None) -> TestResponse:
        return self.client.delete(
            f"/remove/{record_id}", headers={"X-CSRFToken": token or self.token()}
        )

    def flashes(self) -> list[str]:
        """The flash messages the next page shows (reading them consumes them)."""
        page = self.client.get("/").get_data(as_text=True)
        found = re.findall(r'class="flash flash-\w+"[^>]*>\s*<span>([^<]*)</span>', page)
        return [html.unescape(m.strip()) for m in found]


@pytest.fixture
def actions(client: FlaskClient) -> Actions:
    return Actions(client)
