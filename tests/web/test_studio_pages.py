"""The studio's endpoints through Flask's test client, on the real model and real photos:
image URLs, cards, thumbnails, touch-up edits and downloads, and every error path."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image, ImageOps
from werkzeug.test import TestResponse

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.extensions import close_app
from cutout.imaging.compose import OutputOptions
from cutout.storage import NewImage, NewRecord
from tests.conftest import Photos
from tests.helpers import LocalServer, encode, synthetic_photo
from tests.web.conftest import Actions
from tests.web.test_pages import SEED_LIMIT, SEED_SUCCESS, stored_files

ERASE_MIDDLE = {"strokes": [{"mode": "erase", "radius": 0.15, "softness": 0,
                             "points": [[0.45, 0.5], [0.55, 0.5]]}]}  # fmt: skip


@pytest.fixture
def url_app(web_settings: Settings, shared_engine: Engine) -> Iterator[Flask]:
    """The app allowed to fetch from 127.0.0.1, where the test's photo server runs."""
    settings = web_settings.replace(url_allowed_networks="127.0.0.1/32")
    app = create_app(settings, engine=shared_engine)
    yield app
    close_app(app)


@pytest.fixture
def photo_host(photo: Path) -> Iterator[LocalServer]:
    routes: dict[tuple[str, str], Any] = {
        ("GET", "/shots/Red%20kettle.jpg"): lambda h, b: (
            200, {"Content-Type": "image/jpeg"}, photo.read_bytes()
        ),
        ("GET", "/notes.txt"): lambda h, b: (200, {"Content-Type": "text/plain"}, b"hello"),
    }  # fmt: skip
    with LocalServer(routes) as server:
        yield server


def upload(actions: Actions, photo: Path, name: str = "Kettle") -> dict[str, Any]:
    response = actions.upload(name, photo.read_bytes(), json=True)
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def post_json(actions: Actions, url: str, body: Any, method: str = "POST") -> TestResponse:
    return actions.client.open(
        url, method=method, json=body, headers={"X-CSRFToken": actions.token()}
    )


def image_of(response: TestResponse) -> Image.Image:
    image = Image.open(io.BytesIO(response.data))
    image.load()
    return image


def alpha_of(response: TestResponse) -> np.ndarray:
    return np.asarray(image_of(response).getchannel("A"))


# -- image URLs -------------------------------------------------------------------------------


def test_an_image_url_becomes_a_record(
    url_app: Flask, photo_host: LocalServer, photo: Path
) -> None:
    actions = Actions(url_app.test_client())
    url = f"{photo_host.url}/shots/Red%20kettle.jpg"

    response = post_json(actions, "/from-url", {"url": url})

    assert response.status_code == 201
    record = response.get_json()
    assert record["image_name"] == "Red kettle"  # the file name, unquoted, without extension
    assert actions.client.get(record["original_url"]).data == photo.read_bytes()
    with Image.open(io.BytesIO(actions.client.get(record["processed_url"]).data)) as cutout:
        assert cutout.mode == "RGBA"
    named = post_json(actions, "/from-url", {"url": url, "name": "  My kettle "})
    assert named.get_json()["image_name"] == "My kettle"


def test_the_url_form_works_without_script(url_app: Flask, photo_host: LocalServer) -> None:
    actions = Actions(url_app.test_client())
    form = {"url": f"{photo_host.url}/shots/Red%20kettle.jpg", "csrf_token": actions.token()}

    response = actions.client.post("/from-url", data=form)

    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert actions.flashes() == [SEED_SUCCESS]
    assert [r["image_name"] for r in actions.records()] == ["Red kettle"]


@pytest.mark.parametrize(
    ("path", "status", "code", "message"),
    [
        ("/missing.jpg", 400, "download_failed", "answered HTTP 404"),
        ("/notes.txt", 400, "invalid_image", "not an image we can read"),
        (None, 400, "invalid_url", "private or reserved address"),
        ("", 400, "invalid_url", "Please enter the address"),
        ("ftp://example.com/x.jpg", 400, "invalid_url", "must start with http"),
    ],
)
def test_bad_urls_are_refused_with_the_reason_and_store_nothing(
    url_app: Flask,
    web_settings: Settings,
    photo_host: LocalServer,
    path: str | None,
    status: int,
    code: str,
    message: str,
) -> None:
    actions = Actions(url_app.test_client())
    if path is None:  # loopback, but on an app that was not told it may go there
        app = create_app(web_settings, engine=url_app.extensions["cutout.engine"].get())
        actions = Actions(app.test_client())
        url = f"{photo_host.url}/shots/Red%20kettle.jpg"
    else:
        url = f"{photo_host.url}{path}" if path.startswith("/") else path

    response = post_json(actions, "/from-url", {"url": url})

    assert response.status_code == status
    assert response.get_json()["error"] == code and message in response.get_json()["message"]
    form = actions.client.post("/from-url", data={"url": url, "csrf_token": actions.token()})
    assert form.status_code == 302 and message in actions.flashes()[0]
    assert actions.records() == [] and stored_files(web_settings) == []


def test_a_too_large_url_image_is_413(
    web_settings: Settings, shared_engine: Engine, photo_host: LocalServer
) -> None:
    settings = web_settings.replace(url_allowed_networks="127.0.0.1/32", max_upload_mb=0.01)
    actions = Actions(create_app(settings, engine=shared_engine).test_client())

    response = post_json(actions, "/from-url", {"url": f"{photo_host.url}/shots/Red%20kettle.jpg"})

    assert response.status_code == 413 and response.get_json()["error"] == "image_too_large"


def test_a_full_account_is_refused_before_downloading(
    url_app: Flask, photo_host: LocalServer, photo: Path
) -> None:
    actions = Actions(url_app.test_client())
    for i in range(3):
        upload(actions, photo, f"n{i}")

    response = post_json(actions, "/from-url", {"url": f"{photo_host.url}/shots/Red%20kettle.jpg"})

    assert response.status_code == 409 and response.get_json()["message"] == SEED_LIMIT
    assert photo_host.requests == []  # the limit is checked first
    form = actions.client.post(
        "/from-url", data={"url": f"{photo_host.url}/x.jpg", "csrf_token": actions.token()}
    )
    assert form.status_code == 302 and actions.flashes() == [SEED_LIMIT]


def test_the_url_endpoint_needs_the_csrf_token(url_app: Flask) -> None:
    response = url_app.test_client().post("/from-url", json={"url": "http://example.com/a.jpg"})
    assert response.status_code == 400 and response.get_json()["error"] == "csrf_failed"


# -- cards and thumbnails ---------------------------------------------------------------------


def test_a_card_is_the_page_markup_of_one_record(actions: Actions, photo: Path) -> None:
    record = upload(actions, photo, "Kettle <b>")

    card = actions.client.get(f"/records/{record['_id']}/card")

    assert card.status_code == 200 and card.mimetype == "text/html"
    html = card.get_data(as_text=True)
    assert html.strip().startswith('<li class="card record"') and "Kettle &lt;b&gt;" in html
    page = actions.client.get("/").get_data(as_text=True)
    assert html.strip() in page  # the same markup as the page's own card (one template)
    assert f"/records/{record['_id']}/thumbnail/original?v=" in html
    assert 'loading="lazy"' not in html  # inserted at the top: load it now
    assert record["edited"] is False and record["revision"] == 0
    assert record["thumbnail_urls"]["processed"] == f"/records/{record['_id']}/thumbnail/processed"


def test_thumbnails_are_small_webp_and_cached_privately(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    record = upload(actions, photo)
    with Image.open(photo) as source:
        width, height = source.size

    for kind in ("original", "processed"):
        response = client.get(record["thumbnail_urls"][kind])
        assert response.status_code == 200 and response.mimetype == "image/webp"
        assert "private" in response.headers["Cache-Control"]
        thumb = image_of(response)
        assert max(thumb.size) == min(640, max(width, height))
        assert abs(thumb.size[0] / thumb.size[1] - width / height) < 0.01
        assert thumb.mode == ("RGBA" if kind == "processed" else "RGB")
        assert len(response.data) < record[kind]["size_bytes"]
        etag = {"If-None-Match": response.headers["ETag"]}
        again = client.get(record["thumbnail_urls"][kind], headers=etag)
        assert again.status_code == 304
    # The cut-out's thumbnail is the cut-out: transparent where the full-size one is.
    full = alpha_of(client.get(record["processed_url"]))
    small = np.asarray(image_of(client.get(record["thumbnail_urls"]["processed"])).getchannel("A"))
    reduced = np.asarray(Image.fromarray(full).resize(small.shape[::-1], Image.Resampling.BOX))
    assert np.abs(reduced.astype(int) - small).mean() < 3


def test_records_without_thumbnails_get_them_on_first_request(
    app: Flask, actions: Actions, client: FlaskClient, photos: Photos
) -> None:
    """E.g. made before thumbnails existed: made once, stored, then served from the store."""
    store = app.extensions["cutout.store"]
    user = client.get("/", headers={"Accept": "application/json"}).get_json()["user_id"]
    with Image.open(photos.named("astronaut")) as image:
        large = image.resize((1024, 1024))  # above the thumbnails' 640 px
    cutout, size = encode(large.convert("RGBA"), "PNG"), large.size
    record = store.add(
        NewRecord(user, "old", NewImage(encode(large, "PNG"), "image/png", *size),
                  NewImage(cutout, "image/png", *size), "local:isnet", "isnet"),
        limit=3,
    )  # fmt: skip
    assert store.read_thumbnail(user, record.id, "original") is None

    response = client.get(f"/records/{record.id}/thumbnail/original")

    assert response.status_code == 200 and max(image_of(response).size) == 640
    stored = store.read_thumbnail(user, record.id, "original")
    assert stored is not None and stored.data == response.data
    assert stored.source_sha256 == record.original.sha256


def test_thumbnails_made_on_request_wait_rather_than_fail_when_removals_are_busy(
    web_settings: Settings, shared_engine: Engine, photo: Path
) -> None:
    """An old history asks for many thumbnails at once; a full removal gate must not 503 them."""
    app = create_app(web_settings.replace(max_queue=0), engine=shared_engine)
    actions = Actions(app.test_client())
    record = upload(actions, photo)
    user = actions.client.get("/", headers={"Accept": "application/json"}).get_json()["user_id"]
    app.extensions["cutout.store"].save_edit(user, record["_id"], None)  # thumbnail now stale
    admission = app.extensions["cutout.service"].admission
    with admission, admission:  # both removal slots taken, and no removal may wait
        assert actions.upload("busy", photo.read_bytes(), json=True).status_code == 503
        response = actions.client.get(record["thumbnail_urls"]["processed"])
    assert response.status_code == 200 and response.mimetype == "image/webp"


def test_thumbnails_and_cards_are_only_the_owners(app: Flask, photo: Path) -> None:
    alice, mallory = Actions(app.test_client()), Actions(app.test_client())
    record = upload(alice, photo)
    for url in (
        f"/records/{record['_id']}/card",
        record["thumbnail_urls"]["original"],
        f"/records/{record['_id']}/export",
    ):
        assert mallory.client.get(url).status_code == 404
    assert alice.client.get(f"/records/{record['_id']}/thumbnail/secret").status_code == 404
    assert alice.client.get("/records/nope/thumbnail/original").status_code == 404


# -- touch-up -----------------------------------------------------------------------------------


def test_an_edit_erases_on_the_full_size_alpha_and_a_reset_goes_back(
    actions: Actions, client: FlaskClient, web_settings: Settings, photo: Path
) -> None:
    record = upload(actions, photo)
    model_png = client.get(record["processed_url"]).data
    model = alpha_of(client.get(record["processed_url"]))
    height, width = model.shape
    assert model[height // 2, width // 2] > 200  # the microwave is in the middle
    model_thumb = client.get(record["thumbnail_urls"]["processed"]).data

    edited = post_json(actions, f"/records/{record['_id']}/edits", ERASE_MIDDLE)

    assert edited.status_code == 200
    body = edited.get_json()
    assert (body["edited"], body["revision"]) == (True, 1)
    alpha = alpha_of(client.get(record["processed_url"]))
    assert alpha.shape == model.shape
    radius = 0.15 * width
    y, x = np.mgrid[0:height, 0:width] + 0.5
    near = np.hypot(x - np.clip(x, 0.45 * width, 0.55 * width), y - height / 2)
    assert (alpha[near <= radius - 1] == 0).all()
    assert np.array_equal(alpha[near >= radius], model[near >= radius])  # nothing else moved
    assert client.get(record["thumbnail_urls"]["processed"]).data != model_thumb
    assert actions.records()[0]["edited"] is True
    assert 'class="badge badge-edited"' in client.get("/").get_data(as_text=True)
    assert len(stored_files(web_settings)) == 5  # original, model's, edit, two thumbnails

    reset = post_json(actions, f"/records/{record['_id']}/edits", None, method="DELETE")

    assert reset.status_code == 200
    assert (reset.get_json()["edited"], reset.get_json()["revision"]) == (False, 2)
    assert client.get(record["processed_url"]).data == model_png  # the model's own bytes
    assert client.get(record["thumbnail_urls"]["processed"]).data == model_thumb
    assert len(stored_files(web_settings)) == 4


def test_restore_never_shows_what_the_input_itself_hid(
    actions: Actions, client: FlaskClient
) -> None:
    """A PNG whose left half is transparent: restoring everything keeps that half hidden."""
    picture = synthetic_photo(320, 240).convert("RGBA")
    hidden = Image.new("L", picture.size, 255)
    hidden.paste(0, (0, 0, 160, 240))
    picture.putalpha(hidden)
    response = actions.upload("half hidden", encode(picture, "PNG"), json=True)
    record = response.get_json()
    everything = {"strokes": [{"mode": "restore", "radius": 0.5, "softness": 0,
                               "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}  # fmt: skip

    assert post_json(actions, f"/records/{record['_id']}/edits", everything).status_code == 200

    alpha = alpha_of(client.get(record["processed_url"]))
    assert (alpha[:, :160] == 0).all() and (alpha[:, 170:] == 255).all()


BAD_EDITS = [
    ({"strokes": []}, "Send the strokes as JSON"),
    ({"strokes": [{"mode": "smudge", "radius": 0.1, "points": [[0, 0]]}]}, "mode"),
    ("not an object", "Send the strokes as JSON"),
]


def test_bad_edits_are_400_and_change_nothing(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    record = upload(actions, photo)
    before = client.get(record["processed_url"]).data

    for body, message in BAD_EDITS:  # one record for all: each upload runs the model
        response = post_json(actions, f"/records/{record['_id']}/edits", body)
        assert response.status_code == 400 and message in response.get_json()["message"]

    assert client.get(record["processed_url"]).data == before
    assert actions.records()[0]["revision"] == 0


def test_edits_are_only_the_owners_and_need_the_token(
    app: Flask, web_settings: Settings, photo: Path
) -> None:
    alice, mallory = Actions(app.test_client()), Actions(app.test_client())
    record = upload(alice, photo)
    files = stored_files(web_settings)
    url = f"/records/{record['_id']}/edits"

    assert post_json(mallory, url, ERASE_MIDDLE).status_code == 404
    assert post_json(mallory, url, None, method="DELETE").status_code == 404
    missing = "/records/0123456789abcdef01234567/edits"
    assert post_json(alice, missing, ERASE_MIDDLE).status_code == 404
    assert alice.client.post(url, json=ERASE_MIDDLE).status_code == 400  # no CSRF token
    assert alice.client.delete(url).status_code == 400
    assert stored_files(web_settings) == files and alice.records()[0]["revision"] == 0


def test_deleting_an_edited_record_leaves_no_file(
    actions: Actions, web_settings: Settings, photo: Path
) -> None:
    record = upload(actions, photo)
    post_json(actions, f"/records/{record['_id']}/edits", ERASE_MIDDLE)

    assert actions.delete(record["_id"]).status_code == 200
    assert stored_files(web_settings) == []


# -- downloads ----------------------------------------------------------------------------------


def test_downloads_in_every_format_size_and_the_mask(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    record = upload(actions, photo, "Red kettle / side")
    base = f"/records/{record['_id']}/export"
    with Image.open(photo) as source:
        size = ImageOps.exif_transpose(source).size
    model = alpha_of(client.get(record["processed_url"]))
    corner = (3, 3) if model[3, 3] == 0 else (size[0] - 4, size[1] - 4)
    assert model[corner[1], corner[0]] == 0

    cases = {
        "": ("image/png", "Red kettle - side.png", "RGBA", size),
        "?format=webp": ("image/webp", "Red kettle - side.webp", "RGBA", size),
        "?format=jpeg": ("image/jpeg", "Red kettle - side.jpg", "RGB", size),
        "?max_side=200": ("image/png", "Red kettle - side.png", "RGBA", None),
        "?mask=1": ("image/png", "Red kettle - side-mask.png", "L", size),
        "?format=png&background=color&color=%23ff8800": ("image/png", None, "RGB", size),
        "?background=blur&blur=0.03": ("image/png", None, "RGB", size),
    }
    for query, (media_type, name, mode, want_size) in cases.items():
        response = client.get(base + query)
        assert response.status_code == 200, (query, response.get_json())
        assert response.mimetype == media_type, query
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith("attachment")
        if name:
            assert f'filename="{name}"' in disposition or name in disposition, disposition
        image = image_of(response)
        assert image.mode == mode, query
        if want_size:
            assert image.size == want_size, query
        else:
            assert max(image.size) == 200
    jpeg = image_of(client.get(base + "?format=jpeg"))
    x, y = corner
    assert np.asarray(jpeg)[y, x].min() >= 248  # transparent background on JPEG: white
    orange = image_of(client.get(base + "?background=color&color=%23ff8800"))
    assert np.abs(np.asarray(orange, np.int16)[y, x] - (255, 136, 0)).max() <= 1
    assert np.array_equal(np.asarray(image_of(client.get(base + "?mask=1"))), model)


def test_a_download_on_an_uploaded_picture(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    record = upload(actions, photo)
    backdrop = Image.new("RGB", (50, 50), (20, 200, 30))
    form = {
        "format": "jpeg",
        "background": "image",
        "background_image": (io.BytesIO(encode(backdrop, "PNG")), "grass.png"),
    }

    response = client.post(
        f"/records/{record['_id']}/export",
        data=form,
        headers={"X-CSRFToken": actions.token()},
        content_type="multipart/form-data",
    )

    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    image = image_of(response)
    model = alpha_of(client.get(record["processed_url"]))
    ys, xs = np.nonzero(model == 0)
    pixel = np.asarray(image)[ys[0], xs[0]].astype(int)
    assert np.abs(pixel - (20, 200, 30)).max() <= 8


BAD_DOWNLOADS = [
    ("?format=gif", "png, webp or jpeg"),
    ("?background=stripes", "transparent, color, blur or image"),
    ("?background=color&color=nonsense", "is not a colour"),
    ("?max_side=big", "max_side must be a whole number"),
    ("?max_side=-5", "whole number of pixels"),
    ("?background=blur&blur=5", "The blur must be above 0"),
    ("?background=blur&blur=x", "blur must be a number"),
    ("?background=image", "Please choose a background picture"),
]


def test_bad_download_options_are_400(actions: Actions, client: FlaskClient, photo: Path) -> None:
    record = upload(actions, photo)

    for query, message in BAD_DOWNLOADS:
        url = f"/records/{record['_id']}/export{query}"
        response = client.get(url, headers={"Accept": "application/json"})
        assert response.status_code == 400, query
        assert message in response.get_json()["message"], query


def test_a_broken_background_picture_is_400(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    record = upload(actions, photo)
    form = {"background": "image", "background_image": (io.BytesIO(b"nope"), "bg.jpg")}

    response = client.post(
        f"/records/{record['_id']}/export",
        data=form,
        headers={"X-CSRFToken": actions.token(), "Accept": "application/json"},
        content_type="multipart/form-data",
    )

    assert response.status_code == 400 and response.get_json()["error"] == "invalid_image"


def test_a_download_uses_the_edit(actions: Actions, client: FlaskClient, photo: Path) -> None:
    record = upload(actions, photo)
    post_json(actions, f"/records/{record['_id']}/edits", ERASE_MIDDLE)

    mask = np.asarray(image_of(client.get(f"/records/{record['_id']}/export?mask=1")))

    assert np.array_equal(mask, alpha_of(client.get(record["processed_url"])))
    assert mask[mask.shape[0] // 2, mask.shape[1] // 2] == 0
    response = client.get(f"/records/{record['_id']}/export?mask=1")
    assert re.search(r"filename=.*-mask\.png", response.headers["Content-Disposition"])


def test_api_cutouts_saved_without_their_alpha_are_viewable_but_not_editable(
    app: Flask, actions: Actions, client: FlaskClient, photo: Path
) -> None:
    """The native API may store a cut-out flattened (here a JPEG) or as the mask alone."""
    user = client.get("/", headers={"Accept": "application/json"}).get_json()["user_id"]
    service = app.extensions["cutout.service"]
    flat = service.create(user, "flat", photo.read_bytes(), output=OutputOptions(format="jpeg"))
    mask = service.create(user, "mask", photo.read_bytes(), output=OutputOptions(mask_only=True))

    for response in (
        client.get(f"/records/{flat.id}/export", headers={"Accept": "application/json"}),
        post_json(actions, f"/records/{flat.id}/edits", ERASE_MIDDLE),
    ):
        assert response.status_code == 400
        assert "transparency is not stored" in response.get_json()["message"]
    thumb = image_of(client.get(f"/records/{flat.id}/thumbnail/processed"))
    assert thumb.mode == "RGB" and max(thumb.size) <= 640  # made from the stored JPEG

    stored_mask = image_of(client.get(f"/images/{mask.id}/processed"))
    exported = image_of(client.get(f"/records/{mask.id}/export?mask=1"))
    assert stored_mask.mode == "L" and np.array_equal(np.asarray(exported), np.asarray(stored_mask))
    cutout = image_of(client.get(f"/records/{mask.id}/export"))
    assert cutout.mode == "RGBA" and np.array_equal(alpha_of_image(cutout), np.asarray(stored_mask))


def alpha_of_image(image: Image.Image) -> np.ndarray:
    return np.asarray(image.getchannel("A"))
