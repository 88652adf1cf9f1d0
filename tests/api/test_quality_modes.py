"""The ``quality`` parameter on /api/v1/images (and its OpenAPI), on the page's upload form,
and the memory that ``best`` reserves, through Flask's client on the real model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from cutout import extensions
from cutout.engine.base import BoundedEngine, Engine, with_quality
from cutout.memory import BEST_EXTRA_BYTES, estimate
from tests.api.conftest import Key

pytestmark = pytest.mark.model


def upload(client: FlaskClient, key: Key, data: bytes, **extra: str) -> dict[str, object]:
    form = {"name": "shoe", "image": (io.BytesIO(data), "p.jpg"), **extra}
    response = client.post("/api/v1/images", data=form, headers=key.headers)
    body: dict[str, object] = response.get_json()
    body["status"] = response.status_code
    return body


def test_each_mode_on_the_api_and_a_bad_one(client: FlaskClient, key: Key, photo: Path) -> None:
    data = photo.read_bytes()
    fast, best = (
        upload(client, key, data, quality="fast"),
        upload(client, key, data, quality="best"),
    )
    assert (fast["status"], fast["model"]) == (201, "isnet"), fast
    assert (best["status"], best["model"]) == (201, "isnet+modnet"), best
    assert isinstance(fast["confidence"], float) and isinstance(best["confidence"], float)
    bad = upload(client, key, data, quality="turbo")
    assert (bad["status"], bad["error"]) == (400, "invalid_input"), bad
    assert "quality" in str(bad["message"])
    spec = client.get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    fields = schemas["ImageUpload"]["properties"]["quality"]
    assert all(f"'{mode}'" in str(fields) for mode in ("fast", "balanced", "best")), fields


def test_the_page_uploads_in_the_chosen_mode(client: FlaskClient, photo: Path) -> None:
    page = client.get("/").get_data(as_text=True)
    assert '<select id="quality" name="quality"' in page
    assert '<option value="balanced" selected>' in page
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]

    def post(quality: str) -> tuple[int, dict[str, str]]:
        form = {"name": "n", "csrf_token": token, "quality": quality}
        form["image"] = (io.BytesIO(photo.read_bytes()), "p.jpg")  # type: ignore[assignment]
        response = client.post("/", data=form, headers={"Accept": "application/json"})
        return response.status_code, response.get_json()

    status, record = post("fast")
    assert (status, record["model"]) == (201, "isnet"), record
    status, problem = post("turbo")
    assert (status, problem["error"]) == (400, "invalid_quality"), problem


class Watching:
    """An engine that notes how much of the memory budget its admission holds while it runs."""

    def __init__(self, inner: Engine, app: Flask, quality: str | None = None) -> None:
        self.inner, self.app, self.quality = inner, app, quality
        self.reserved: list[int] = []

    name = property(lambda self: self.inner.name)
    model = property(lambda self: self.inner.model)
    runtime = property(lambda self: self.inner.runtime)

    def with_quality(self, quality: str) -> Watching:
        watching = Watching(with_quality(self.inner, quality), self.app, quality)
        watching.reserved = self.reserved
        return watching

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        self.reserved.append(self.app.extensions[extensions.SERVICE].admission.reserved)
        return self.inner.predict_mask(image)


def test_best_reserves_its_measured_extra_memory(
    app: Flask, client: FlaskClient, key: Key, photo: Path, shared_engine: BoundedEngine
) -> None:
    watching = Watching(shared_engine.inner, app)
    app.extensions[extensions.SERVICE].engine = lambda: watching
    data = photo.read_bytes()
    for quality in ("balanced", "best"):
        assert upload(client, key, data, quality=quality)["status"] == 201
    with Image.open(photo) as opened:
        removal = estimate(*opened.size)
    assert watching.reserved == [removal, removal + BEST_EXTRA_BYTES], watching.reserved
