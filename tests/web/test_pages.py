"""Every endpoint and every error path, through Flask's test client, on the real model."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.errors import EngineBusy, EngineError
from cutout.extensions import close_app
from cutout.imaging.confidence import REVIEW_BELOW
from cutout.storage.base import NewImage, NewRecord
from tests.helpers import encode, synthetic_photo
from tests.web.conftest import Actions

SEED_SUCCESS = "Image generated successfully"
SEED_FAILED = "Failed to generate the image"
SEED_LIMIT = "Max limit reached. Please remove a record."
SEED_UNEXPECTED = "Something went wrong"


def stored_files(settings: Settings) -> list[Path]:
    images = settings.data_dir / "images"
    return sorted(p for p in images.rglob("*") if p.is_file()) if images.exists() else []


# -- probes -----------------------------------------------------------------------------------


def test_health(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.get_json() == {"status": "Healthy"}
    assert "Set-Cookie" not in response.headers  # probes do not mint users


def test_ready_when_store_and_model_are(client: FlaskClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200 and response.get_json()["status"] == "Ready"


# -- GET / ------------------------------------------------------------------------------------


def test_home_sets_a_signed_httponly_cookie(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("user_id="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert "." in value  # payload.signature, not a bare id
    assert client.get("/").headers.get("Set-Cookie", "").find("user_id=") == -1  # kept after


def test_cookie_is_secure_behind_https(client: FlaskClient) -> None:
    response = client.get("/", base_url="https://localhost")
    assert all("Secure" in c for c in response.headers.getlist("Set-Cookie"))


def test_home_page_shows_form_quota_and_empty_state(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'name="csrf_token"' in page and '<meta name="csrf-token"' in page
    assert 'enctype="multipart/form-data"' in page
    assert "0</span> of 3 images used" in page
    assert "No cut-outs yet" in page


def test_footer_says_where_photos_go(web_settings: Settings, shared_engine: Engine) -> None:
    expected = {
        "on this server (isnet + modnet models)": web_settings,
        "on this server (isnet models)": web_settings.replace(fusion="off"),
        "by an external service (RapidAPI)": web_settings.replace(
            engine="objectcut", rapid_api_key="key"
        ),
    }
    for text, settings in expected.items():
        app = create_app(settings, engine=shared_engine)
        try:
            assert text in page_of(app)
        finally:
            close_app(app)


def page_of(app: Flask) -> str:
    return app.test_client().get("/").get_data(as_text=True)


def test_home_json_shape(client: FlaskClient) -> None:
    body = client.get("/", headers={"Accept": "application/json"}).get_json()
    assert set(body) == {"user_id", "limit", "used", "records"}
    assert body["limit"] == 3 and body["used"] == 0 and body["records"] == []


def test_security_headers(client: FlaskClient) -> None:
    headers = client.get("/").headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    policy = headers["Permissions-Policy"]
    assert "camera=()" in policy and "geolocation=()" in policy and "microphone=()" in policy


def test_page_has_no_inline_script_or_external_assets(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        with client.get(asset) as response:
            assert response.status_code == 200


# -- POST / -----------------------------------------------------------------------------------


def test_upload_stores_original_and_cutout(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    response = actions.upload("Microwave", photo.read_bytes())
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert actions.flashes() == [SEED_SUCCESS]
    [record] = actions.records()
    assert record["image_name"] == "Microwave"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", str(record["created_on"]))
    assert record["engine"] == "local:isnet+modnet" and record["model"] == "isnet+modnet"
    score = record["confidence"]
    assert isinstance(score, float) and 0.0 <= score <= 1.0
    assert record["needs_review"] is (score < REVIEW_BELOW)
    original = client.get(str(record["original_url"]))
    assert original.status_code == 200 and original.mimetype == "image/jpeg"
    assert original.data == photo.read_bytes()  # kept byte for byte
    processed = client.get(str(record["processed_url"]))
    assert processed.mimetype == "image/png"
    with Image.open(io.BytesIO(processed.data)) as cutout, Image.open(photo) as source:
        assert cutout.mode == "RGBA" and cutout.size == source.size
        alpha = np.asarray(cutout.getchannel("A"))
        assert (alpha == 0).mean() > 0.2 and (alpha == 255).mean() > 0.2


def test_upload_json_returns_the_record(actions: Actions, photo: Path) -> None:
    response = actions.upload("As JSON", photo.read_bytes(), json=True)
    assert response.status_code == 201
    body = response.get_json()
    assert body["image_name"] == "As JSON" and body["_id"] == actions.records()[0]["_id"]
    assert body["processed"]["media_type"] == "image/png"


def test_a_cutout_that_needs_review_gets_a_badge(
    app: Flask, actions: Actions, client: FlaskClient
) -> None:
    """The "check this one" badge shows on exactly the records flagged for review."""
    user = client.get("/", headers={"Accept": "application/json"}).get_json()["user_id"]
    image = NewImage(encode(synthetic_photo(), "PNG"), "image/png", 320, 240)
    store = app.extensions["cutout.store"]
    for name, score in (("sure", 0.95), ("unsure", 0.31)):
        store.add(
            NewRecord(user, name, image, image, "local:isnet+modnet", "isnet+modnet",
                      confidence=score, needs_review=score < REVIEW_BELOW),
            limit=3,
        )  # fmt: skip
    page = client.get("/").get_data(as_text=True)
    cards = {
        c.split("</h3>")[0].rsplit(">", 1)[1]: c for c in page.split('class="card record"')[1:]
    }
    assert "Check this one" in cards["unsure"] and "Confidence 0.31" in cards["unsure"]
    assert "Check this one" not in cards["sure"]
    listed = {r["image_name"]: r for r in actions.records()}
    assert listed["unsure"]["needs_review"] is True and listed["unsure"]["confidence"] == 0.31
    assert listed["sure"]["needs_review"] is False


def test_history_is_newest_first_and_rendered(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    for name in ("first", "second"):
        actions.upload(name, photo.read_bytes())
    assert [r["image_name"] for r in actions.records()] == ["second", "first"]
    page = client.get("/").get_data(as_text=True)
    assert page.index(">second<") < page.index(">first<")
    assert "2</span> of 3 images used" in page and "checkerboard" in page
    assert "Download PNG" in page and "No cut-outs yet" in page  # empty state hidden, not gone


def test_names_are_trimmed_and_escaped(actions: Actions, client: FlaskClient, photo: Path) -> None:
    actions.upload("  <script>alert(1)</script>\n ", photo.read_bytes())
    assert actions.records()[0]["image_name"] == "<script>alert(1)</script>"
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("", "photo", "Please give the image a name."),
        ("   ", "photo", "Please give the image a name."),
        ("x" * 101, "photo", "The name is too long: at most 100 characters, please."),
        ("ok", None, "Please choose an image to upload."),
        ("ok", b"this is not an image", "The file is not an image we can read"),
        ("ok", b"", "Please choose an image to upload."),
    ],
)
def test_bad_uploads_get_a_clear_message_and_store_nothing(
    actions: Actions,
    web_settings: Settings,
    photo: Path,
    name: str,
    data: bytes | str | None,
    message: str,
) -> None:
    payload = photo.read_bytes() if data == "photo" else data
    response = actions.upload(name, payload if not isinstance(payload, str) else None)
    assert response.status_code == 302
    flashes = actions.flashes()
    assert len(flashes) == 1 and flashes[0].startswith(message)
    assert actions.records() == [] and stored_files(web_settings) == []


def test_bad_upload_as_json_gets_status_and_code(actions: Actions) -> None:
    response = actions.upload("ok", b"not an image", json=True)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_image"
    unsupported = actions.upload("ok", encode(synthetic_photo(), "PPM"), json=True)
    assert unsupported.status_code == 415 and "PPM" in unsupported.get_json()["message"]


def test_file_over_the_upload_limit(web_settings: Settings, shared_engine: Engine) -> None:
    app = create_app(web_settings.replace(max_upload_mb=0.1), engine=shared_engine)
    actions = Actions(app.test_client())
    big = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    data = encode(Image.fromarray(big), "PNG")
    assert len(data) > 200_000
    response = actions.upload("big", data)
    assert response.status_code == 302
    assert actions.flashes() == ["The file is too large: the largest accepted upload is 0.1 MB."]
    assert actions.upload("big", data, json=True).status_code == 413
    assert actions.records() == []


def test_image_over_the_pixel_limit(web_settings: Settings, shared_engine: Engine) -> None:
    app = create_app(web_settings.replace(max_megapixels=0.01), engine=shared_engine)
    actions = Actions(app.test_client())
    response = actions.upload("huge", encode(synthetic_photo(200, 100), "PNG"), json=True)
    assert response.status_code == 413 and "MP" in response.get_json()["message"]


def test_limit_reached_uses_the_seed_message(actions: Actions, photo: Path) -> None:
    for i in range(3):
        actions.upload(f"n{i}", photo.read_bytes())
    actions.flashes()
    assert actions.upload("one too many", photo.read_bytes()).status_code == 302
    assert actions.flashes() == [SEED_LIMIT]
    assert len(actions.records()) == 3
    assert actions.upload("again", photo.read_bytes(), json=True).status_code == 409


class FailingEngine:
    """Injects a failure where the model would run."""

    name = model = runtime = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        raise self.error


@pytest.mark.parametrize(
    ("error", "message", "status"),
    [
        (EngineError("model exploded"), SEED_FAILED, 502),
        (RuntimeError("a bug"), SEED_UNEXPECTED, 500),
        (EngineBusy("queue full", retry_after=7), "The server is busy", 503),
    ],
)
def test_engine_failures(
    web_settings: Settings, photo: Path, error: Exception, message: str, status: int
) -> None:
    app = create_app(web_settings, engine=FailingEngine(error))
    actions = Actions(app.test_client())
    assert actions.upload("x", photo.read_bytes()).status_code == 302
    flashes = actions.flashes()
    assert len(flashes) == 1 and flashes[0].startswith(message)
    json_response = actions.upload("x", photo.read_bytes(), json=True)
    assert json_response.status_code == status
    if status == 503:
        assert json_response.headers["Retry-After"] == "7"
    assert actions.records() == [] and stored_files(web_settings) == []


# -- CSRF -------------------------------------------------------------------------------------


def test_requests_without_csrf_token_are_refused(
    actions: Actions, client: FlaskClient, photo: Path
) -> None:
    actions.upload("mine", photo.read_bytes())
    record_id = str(actions.records()[0]["_id"])
    form = {"name": "x", "image": (io.BytesIO(photo.read_bytes()), "p.jpg")}
    assert client.post("/", data=form, content_type="multipart/form-data").status_code == 400
    assert client.put(f"/update/{record_id}", json={"record_name": "y"}).status_code == 400
    assert client.delete(f"/remove/{record_id}").status_code == 400
    assert actions.rename(record_id, "z", token="forged").status_code == 400
    assert [r["image_name"] for r in actions.records()] == ["mine"]


# -- PUT /update, DELETE /remove, GET /images -------------------------------------------------


def test_rename(actions: Actions, photo: Path) -> None:
    actions.upload("old", photo.read_bytes())
    record_id = str(actions.records()[0]["_id"])
    response = actions.rename(record_id, "  New name ")
    assert response.status_code == 200 and response.get_json() == {"message": "success"}
    assert actions.records()[0]["image_name"] == "New name"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, None, 42])
def test_rename_with_an_invalid_name_is_400(actions: Actions, photo: Path, name: object) -> None:
    actions.upload("keep", photo.read_bytes())
    record_id = str(actions.records()[0]["_id"])
    response = actions.rename(record_id, name)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_name"
    assert actions.records()[0]["image_name"] == "keep"


def test_rename_with_bad_bodies(actions: Actions, client: FlaskClient, photo: Path) -> None:
    actions.upload("keep", photo.read_bytes())
    record_id = str(actions.records()[0]["_id"])
    headers = {"X-CSRFToken": actions.token()}
    not_json = client.put(f"/update/{record_id}", data="hello", headers=headers)
    assert not_json.status_code == 400
    mismatch = client.put(
        f"/update/{record_id}",
        headers=headers,
        json={"record_id": "someone-else", "record_name": "x"},
    )
    assert mismatch.status_code == 400 and "does not match" in mismatch.get_json()["message"]


def test_unknown_and_malformed_ids_are_404(actions: Actions, client: FlaskClient) -> None:
    for record_id in ("0" * 24, "nope", "a.b-c"):
        assert actions.rename(record_id, "x").status_code == 404
        assert actions.delete(record_id).status_code == 404
        assert client.get(f"/images/{record_id}/processed").status_code == 404


def test_delete_removes_record_and_files(
    actions: Actions, client: FlaskClient, web_settings: Settings, photo: Path
) -> None:
    actions.upload("bye", photo.read_bytes())
    record = actions.records()[0]
    assert stored_files(web_settings)
    response = actions.delete(str(record["_id"]))
    assert response.status_code == 200 and response.get_json() == {"message": "success"}
    assert actions.records() == [] and stored_files(web_settings) == []
    assert client.get(str(record["processed_url"])).status_code == 404
    assert actions.delete(str(record["_id"])).status_code == 404


def test_image_caching_and_download(actions: Actions, client: FlaskClient, photo: Path) -> None:
    actions.upload("Red shoe / side", photo.read_bytes())
    record = actions.records()[0]
    response = client.get(str(record["processed_url"]))
    etag = response.headers["ETag"]
    assert "private" in response.headers["Cache-Control"]
    assert (
        client.get(str(record["processed_url"]), headers={"If-None-Match": etag}).status_code == 304
    )
    download = client.get(str(record["download_url"]))
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and ".png" in disposition
    assert "Red shoe" in disposition and "/" not in disposition.split("filename=")[1]
    assert client.get(f"/images/{record['_id']}/secret").status_code == 404


# -- isolation between users ------------------------------------------------------------------


def test_users_only_ever_see_their_own_records(app: Flask, photo: Path) -> None:
    alice, mallory = Actions(app.test_client()), Actions(app.test_client())
    alice.upload("alice's", photo.read_bytes())
    record = alice.records()[0]
    record_id = str(record["_id"])
    assert mallory.records() == []
    assert mallory.client.get(str(record["original_url"])).status_code == 404
    assert mallory.client.get(str(record["processed_url"])).status_code == 404
    assert mallory.rename(record_id, "pwned").status_code == 404
    assert mallory.delete(record_id).status_code == 404
    assert [r["image_name"] for r in alice.records()] == ["alice's"]


def test_forged_or_tampered_cookie_gets_a_fresh_user(app: Flask, photo: Path) -> None:
    alice = Actions(app.test_client())
    alice.upload("alice's", photo.read_bytes())
    alice_id = alice.client.get("/", headers={"Accept": "application/json"}).get_json()["user_id"]
    for forged in (alice_id, alice_id + ".AAAA", "bm90IHNpZ25lZA"):
        mallory = app.test_client()
        mallory.set_cookie("user_id", forged)
        body = mallory.get("/", headers={"Accept": "application/json"}).get_json()
        assert body["records"] == [] and body["user_id"] != alice_id


class GatedEngine:
    """The real model behind a gate the test opens: stands in for a slow model."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()  # a removal has reached the model
        self.calls = 0
        self.name, self.model, self.runtime = inner.name, inner.model, inner.runtime

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        self.calls += 1
        self.entered.set()
        self.gate.wait(60)
        return self.inner.predict_mask(image)


def test_an_upload_in_progress_holds_its_place_under_the_limit(
    web_settings: Settings, shared_engine: Engine, photo: Path
) -> None:
    """With room for one more photo and that upload in the model, the user's next upload is
    refused at once: it could not be stored, so it must not run the model. Before stop 30 it
    did (20 uploads at once with room for 5 ran the model 20 times)."""
    settings = web_settings.replace(max_concurrent=2, max_queue=4, user_limit=1)
    gated = GatedEngine(shared_engine)
    app = create_app(settings, engine=gated)
    user = Actions(app.test_client())
    token = user.token()
    first: list[int] = []
    data = photo.read_bytes()
    # a failed upload gives its place back (a photo that does not decode fails in processing)
    assert user.upload("x", data[: len(data) // 3], json=True, token=token).status_code == 400
    running = threading.Thread(
        target=lambda: first.append(user.upload("a", data, json=True, token=token).status_code)
    )
    running.start()
    assert gated.entered.wait(30)
    second = user.upload("b", data, json=True, token=token)
    assert second.status_code == 409, second.get_json()
    assert running.is_alive() and gated.calls == 1  # refused without waiting for the model
    gated.gate.set()
    running.join(60)
    assert first == [201] and gated.calls == 1
    assert user.upload("c", data, json=True, token=token).status_code == 409
    close_app(app)


def test_full_queue_is_refused_at_once(
    web_settings: Settings, shared_engine: Engine, photo: Path
) -> None:
    """Two removals run (one in the model, one around it), one waits, the rest are refused."""
    settings = web_settings.replace(max_concurrent=1, max_queue=1, user_limit=10)
    gated = GatedEngine(shared_engine)
    app = create_app(settings, engine=gated)
    admission = app.extensions["cutout.service"].admission
    users = [Actions(app.test_client()) for _ in range(5)]
    tokens = [user.token() for user in users]
    statuses: dict[int, int] = {}

    def upload(i: int) -> None:
        response = users[i].upload(f"n{i}", photo.read_bytes(), json=True, token=tokens[i])
        statuses[i] = response.status_code

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while admission.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert admission.waiting == 1  # two admitted and blocked in the model, one queued
    started = time.monotonic()
    refused = users[3].upload("late", photo.read_bytes(), json=True, token=tokens[3])
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.get_json()["error"] == "busy"
    assert time.monotonic() - started < 2  # refused at once, not after waiting its turn
    form = users[4].upload("late", photo.read_bytes(), token=tokens[4])
    assert form.status_code == 302 and users[4].flashes()[0].startswith("The server is busy")
    gated.gate.set()
    for thread in threads:
        thread.join(60)
    assert statuses == {0: 201, 1: 201, 2: 201}
