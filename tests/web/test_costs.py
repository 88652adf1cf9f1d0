"""Every decoded picture is costed and admitted by the one gate, on the real model.

A flat 7000x7000 PNG is 160 KB and 147 MB decoded: sent as remove.bg's ``bg_image_file`` it
raised a worker's peak from 396 MB to 1,023 MB while the budget showed nothing reserved. The
studio's export with a background picture did the same. Here the gate's reservations are
recorded while such requests run.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from cutout.config import Settings
from cutout.engine.base import Admission
from cutout.extensions import close_app
from cutout.imaging.decode import Limits, load_reduced
from cutout.memory import MB, decode_cost, estimate, output_cost
from tests.helpers import encode, synthetic_photo
from tests.web.conftest import Actions

FLAT = encode(Image.new("RGB", (7000, 7000), (30, 120, 200)), "PNG", optimize=True)


@contextmanager
def reservations(admission: Admission) -> Iterator[list[int]]:
    """The cost of every admission made while the block runs."""
    costs: list[int] = []
    original = admission.admit

    def admit(cost: int = 0, **kw: object):  # type: ignore[no-untyped-def]
        costs.append(cost)
        return original(cost, **kw)  # type: ignore[arg-type]

    admission.admit = admit  # type: ignore[method-assign]
    try:
        yield costs
    finally:
        del admission.admit


def test_a_background_picture_is_decoded_no_larger_than_the_output() -> None:
    """JPEGs are decoded at a fraction of their size (draft mode); others are shrunk at once."""
    limits = Limits(max_bytes=50 * MB, max_pixels=50_000_000)
    jpeg = encode(synthetic_photo(4000, 3000), "JPEG", quality=85)

    picture = load_reduced(jpeg, limits, (400, 300))
    assert 400 <= picture.width <= 1000 and 300 <= picture.height <= 750
    flat = load_reduced(FLAT, limits, (640, 480))
    assert flat.mode == "RGB" and 640 <= flat.width <= 1280 and flat.height >= 480


@pytest.fixture
def api_app(settings: Settings, shared_engine: object) -> Iterator[Flask]:
    from cutout.app import create_app

    app = create_app(settings, engine=shared_engine)  # type: ignore[arg-type]
    yield app
    close_app(app)


def test_removebg_reserves_the_background_picture_with_the_removal(
    api_app: Flask, photo: Path
) -> None:
    service = api_app.extensions["cutout.keys"]
    _, secret = service.create("user-a", "test key")
    admission = api_app.extensions["cutout.service"].admission
    client = api_app.test_client()

    with reservations(admission) as costs:
        response = client.post(
            "/v1.0/removebg",
            data={
                "image_file": (io.BytesIO(photo.read_bytes()), "photo.jpg"),
                "bg_image_file": (io.BytesIO(FLAT), "flat.png"),
                "size": "full",
            },
            headers={"X-Api-Key": secret},
        )

    assert response.status_code == 200, response.get_data(as_text=True)
    with Image.open(photo) as p:
        removal, pixels = estimate(*p.size), p.width * p.height
    flattened = output_cost(pixels, format="png", flattened=True)  # composed over the picture
    assert costs == [removal + flattened + decode_cost(7000, 7000)]


def test_a_background_picture_that_cannot_fit_is_refused_before_decoding(
    settings: Settings, shared_engine: object, photo: Path
) -> None:
    from cutout.app import create_app

    app = create_app(settings.replace(memory_budget_mb=300), engine=shared_engine)  # type: ignore[arg-type]
    try:
        _, secret = app.extensions["cutout.keys"].create("user-a", "test key")
        response = app.test_client().post(
            "/v1.0/removebg",
            data={
                "image_file": (io.BytesIO(photo.read_bytes()), "photo.jpg"),
                "bg_image_file": (io.BytesIO(FLAT), "flat.png"),
            },
            headers={"X-Api-Key": secret},
        )
    finally:
        close_app(app)

    assert response.status_code == 400
    error = response.get_json()["errors"][0]
    assert error["code"] == "resolution_too_high"
    assert "smaller background picture" in error["detail"]


def test_remove_bg_margins_past_the_photo_are_reserved(api_app: Flask, photo: Path) -> None:
    """crop with 50 % margins draws canvases up to four times the photo: reserved too."""
    _, secret = api_app.extensions["cutout.keys"].create("user-a", "test key")
    admission = api_app.extensions["cutout.service"].admission
    with reservations(admission) as costs:
        response = api_app.test_client().post(
            "/v1.0/removebg",
            data={
                "image_file": (io.BytesIO(photo.read_bytes()), "photo.jpg"),
                "crop": "true",
                "crop_margin": "50%",
                "size": "full",
            },
            headers={"X-Api-Key": secret},
        )

    assert response.status_code == 200
    with Image.open(photo) as p:
        width, height = p.size
    assert costs[0] > estimate(width, height) + 3 * width * height  # more than the removal


def test_the_studio_export_reserves_its_background_picture(
    app: Flask, actions: Actions, client: FlaskClient, photo: Path
) -> None:
    assert actions.upload("Photo", photo.read_bytes()).status_code == 302
    (record,) = actions.records()
    admission = app.extensions["cutout.service"].admission

    with reservations(admission) as costs:
        response = client.post(
            f"/records/{record['_id']}/export",
            data={
                "csrf_token": actions.token(),
                "background": "image",
                "format": "jpeg",
                "background_image": (io.BytesIO(FLAT), "flat.png"),
            },
        )

    assert response.status_code == 200
    with Image.open(photo) as p:
        flattened = output_cost(p.width * p.height, format="jpeg", flattened=True)
        assert costs == [estimate(*p.size) + flattened + decode_cost(7000, 7000)]
    with Image.open(io.BytesIO(response.data)) as out:
        assert out.getpixel((2, 2)) == pytest.approx((30, 120, 200), abs=3)


def test_thumbnails_made_on_request_enter_the_budget(
    app: Flask, client: FlaskClient, photo: Path
) -> None:
    """A cut-out stored as a JPEG (the native API's choice) gets its thumbnail on request."""
    user = client.get("/", headers={"Accept": "application/json"}).get_json()["user_id"]
    _, secret = app.extensions["cutout.keys"].create(user, "test key")
    created = client.post(
        "/api/v1/images",
        data={
            "name": "Photo",
            "format": "jpeg",
            "image": (io.BytesIO(photo.read_bytes()), "p.jpg"),
        },
        headers={"X-Api-Key": secret},
    )
    assert created.status_code == 201
    admission = app.extensions["cutout.service"].admission

    with reservations(admission) as costs:
        response = client.get(f"/records/{created.get_json()['id']}/thumbnail/processed")

    assert response.status_code == 200
    with Image.open(photo) as p:
        assert costs == [estimate(*p.size)]
