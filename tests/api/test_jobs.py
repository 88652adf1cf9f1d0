"""/api/v1/jobs on the embedded engine (the web process's own threads, the default without
CUTOUT_QUEUE_URL): the real app, the real model, real SQLite, a webhook on loopback."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.extensions import close_app
from tests.api.conftest import Key, MakeKey
from tests.conftest import Photos
from tests.jobs.conftest import small_photos

BROKEN = b"\xff\xd8\xff\xe0 this is not a JPEG at all"


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.replace(
        user_limit=3, url_allowed_networks="127.0.0.1/32", job_lease_seconds=5.0
    )


def _post(client: FlaskClient, key: Key, files: list[tuple[str, bytes]], **fields: Any) -> Any:
    data: dict[str, Any] = {"images": [(io.BytesIO(b), n) for n, b in files], **fields}
    headers = {**key.headers, **fields.pop("headers", {})}
    data.pop("headers", None)
    return client.post(
        "/api/v1/jobs", data=data, headers=headers, content_type="multipart/form-data"
    )


def _item_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("cutout_job_item_seconds_count", {"outcome": outcome})
    return value or 0.0


def _json(response: Any) -> Any:
    return response.get_json()


def _done(client: FlaskClient, key: Key, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = _json(client.get(f"/api/v1/jobs/{job_id}", headers=key.headers))
        if body["status"] in ("done", "cancelled") and body["running"] == 0:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_a_broken_photo_and_an_over_quota_item_fail_alone(
    client: FlaskClient, make_key: MakeKey, photos: Photos, app: Flask
) -> None:
    key = make_key(credits=10)
    good = small_photos(photos, 4)
    before = {o: _item_count(o) for o in ("done", "failed")}
    answer = _post(client, key, [good[0], ("broken.jpg", BROKEN), *good[1:]], format="webp")
    assert answer.status_code == 202 and answer.headers["Location"].endswith(answer.json["id"])
    body = _done(client, key, answer.json["id"])
    by_index = {i["index"]: i for i in body["items"]}
    assert body["status"] == "done" and body["succeeded"] == 3 and body["failed"] == 2
    assert by_index[1]["error_code"] == "invalid_image" and "corrupt" in by_index[1]["error"]
    assert by_index[4]["error"] == "Max limit reached. Please remove a record."  # USER_LIMIT 3
    assert app.extensions["cutout.store"].count(key.user_id) == 3
    assert app.extensions["cutout.keys"].store.get_key(key.id).credits_used == 3
    assert _item_count("done") - before["done"] == 3  # the item latency histogram
    assert _item_count("failed") - before["failed"] == 2
    app.extensions["cutout.jobs"].start()  # the gauges: refreshed at once, then every 10 s
    deadline = time.monotonic() + 10
    while REGISTRY.get_sample_value("cutout_job_items", {"state": "failed"}) != 2:
        assert time.monotonic() < deadline, "the job gauges were not refreshed"
        time.sleep(0.1)
    assert REGISTRY.get_sample_value("cutout_job_workers") == 1  # the web's own thread
    listed = _json(client.get("/api/v1/images", headers=key.headers))
    assert listed["total"] == 3  # ordinary records in the owner's history
    zipped = client.get(f"/api/v1/jobs/{answer.json['id']}/results.zip", headers=key.headers)
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped.data)).namelist()) == [
        "photo-00.webp", "photo-01.webp", "photo-02.webp"
    ]  # fmt: skip


def test_another_keys_job_is_invisible_and_idempotency_keys_replay(
    client: FlaskClient, make_key: MakeKey, photos: Photos
) -> None:
    key, other = make_key("user-a"), make_key("user-b")
    files = small_photos(photos, 1)
    headers = {"Idempotency-Key": "batch-1"}
    first = _post(client, key, files, headers=headers)
    again = _post(client, key, files, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json["id"] == first.json["id"] and again.headers["Idempotent-Replayed"] == "true"
    changed = _post(client, key, small_photos(photos, 2)[1:], headers=headers)
    assert changed.status_code == 409
    job = first.json["id"]
    for method, path in (
        ("get", f"/api/v1/jobs/{job}"),
        ("get", f"/api/v1/jobs/{job}/results.zip"),
        ("delete", f"/api/v1/jobs/{job}"),
    ):
        assert getattr(client, method)(path, headers=other.headers).status_code == 404
    assert _json(client.get("/api/v1/jobs", headers=other.headers))["items"] == []
    listed = _json(client.get("/api/v1/jobs", headers=key.headers))
    assert [j["id"] for j in listed["items"]] == [job]
    _done(client, key, job)


def test_the_same_photo_is_computed_once_per_user_never_across_users(
    client: FlaskClient, make_key: MakeKey, photos: Photos, app: Flask
) -> None:
    alice, bob = make_key("alice", credits=5), make_key("bob", credits=5)
    (name, data) = small_photos(photos, 1)[0]
    job = _done(client, alice, _post(client, alice, [(name, data), ("copy.jpg", data)]).json["id"])
    ids = {i["image_id"] for i in job["items"]}
    assert job["succeeded"] == 2 and len(ids) == 1
    other = _done(client, bob, _post(client, bob, [(name, data)]).json["id"])
    assert other["items"][0]["image_id"] not in ids
    store, keys = app.extensions["cutout.store"], app.extensions["cutout.keys"].store
    assert store.count("alice") == 1 and keys.get_key(alice.id).credits_used == 1
    assert store.count("bob") == 1


def test_a_job_runs_in_the_quality_mode_it_asks_for(
    client: FlaskClient, make_key: MakeKey, photos: Photos
) -> None:
    key = make_key(credits=5)
    files = small_photos(photos, 1)
    refused = _post(client, key, files, quality="turbo")
    assert refused.status_code == 400 and "quality" in refused.json["message"], refused.json
    assert _json(client.get("/api/v1/jobs", headers=key.headers))["items"] == []
    fast = _done(client, key, _post(client, key, files, quality="fast").json["id"])
    plain = _done(client, key, _post(client, key, files).json["id"])  # the server's default
    models = [
        _json(client.get(f"/api/v1/images/{job['items'][0]['image_id']}", headers=key.headers))
        for job in (fast, plain)
    ]
    # Another mode is other options: the same photo is computed again, not deduplicated.
    assert [m["model"] for m in models] == ["isnet", "isnet+modnet"], models


def test_cancel_stops_the_items_not_started(
    client: FlaskClient, make_key: MakeKey, photos: Photos, app: Flask
) -> None:
    key = make_key(credits=10)
    job = _post(client, key, small_photos(photos, 6)).json["id"]
    cancelled: Any = client.delete(f"/api/v1/jobs/{job}", headers=key.headers)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    body = _done(client, key, job)
    assert body["cancelled"] >= 4 and body["succeeded"] + body["cancelled"] == 6
    assert app.extensions["cutout.store"].count(key.user_id) == body["succeeded"]
    assert app.extensions["cutout.keys"].store.get_key(key.id).credits_used == body["succeeded"]


def test_jobs_over_the_limits_are_refused_with_413_and_keep_nothing(
    api_settings: Settings, shared_engine: Engine, photos: Photos, tmp_path: Path
) -> None:
    from cutout.app import create_app

    app = create_app(api_settings.replace(job_max_items=2, job_max_mb=0.05), engine=shared_engine)
    client = app.test_client()
    _, secret = app.extensions["cutout.keys"].create("user-a", "k")
    key = Key("", "user-a", secret)
    too_many = _post(client, key, [(f"{n}.jpg", b"x") for n in range(3)])
    assert too_many.status_code == 413 and "at most 2" in too_many.json["message"]
    too_big = _post(client, key, [("big.jpg", b"x" * 60_000)])
    assert too_big.status_code == 413 and "too large" in too_big.json["message"]
    inputs = Path(api_settings.data_dir) / "job_inputs"
    assert not inputs.exists() or list(inputs.iterdir()) == []
    close_app(app)


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    photo = b""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.photo)))
        self.end_headers()
        self.wfile.write(self.photo)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_url_job_ends_with_a_signed_webhook(
    client: FlaskClient, make_key: MakeKey, photos: Photos, loopback: ThreadingHTTPServer
) -> None:
    key = make_key()
    _Hook.received, _Hook.photo = [], small_photos(photos, 1)[0][1]
    base = f"http://127.0.0.1:{loopback.server_address[1]}"
    answer: Any = client.post(
        "/api/v1/jobs",
        json={"urls": [base + "/a.jpg"], "webhook_url": base + "/hook", "format": "jpeg"},
        headers=key.headers,
    )
    assert answer.status_code == 202, answer.json
    body = _done(client, key, answer.json["id"])
    assert body["succeeded"] == 1 and body["items"][0]["name"] == "a.jpg"
    deadline = time.monotonic() + 30
    while not _Hook.received:
        assert time.monotonic() < deadline, "no webhook"
        time.sleep(0.1)
    headers, sent = _Hook.received[0]
    # The receiver's check, as docs/guide/jobs.md shows it: from the API key alone.
    secret = hmac.new(
        hashlib.sha256(key.secret.encode()).hexdigest().encode(), b"cutout-webhook", "sha256"
    ).hexdigest()
    expected = "sha256=" + hmac.new(secret.encode(), sent, "sha256").hexdigest()
    assert hmac.compare_digest(headers["X-Cutout-Signature"], expected)
    assert json.loads(sent)["id"] == answer.json["id"] and json.loads(sent)["status"] == "done"


def test_a_job_on_the_mongodb_store(
    api_settings: Settings, shared_engine: Engine, photos: Photos
) -> None:
    """The same job through the MongoDB backend (mongomock): items, inputs in GridFS, dedup,
    the zip, the record and the credit."""
    from cutout.app import create_app
    from cutout.storage import MongoStore
    from tests.storage.conftest import MockClient

    mongo = MockClient("mongodb://localhost/cutout_jobs")
    store = MongoStore("mongodb://localhost/cutout_jobs", client_factory=lambda *a, **k: mongo)
    app = create_app(api_settings, engine=shared_engine, store=store)
    client = app.test_client()
    made, secret = app.extensions["cutout.keys"].create("user-m", "k", credits=5)
    key = Key(made.id, "user-m", secret)
    (name, data) = small_photos(photos, 1)[0]
    answer = _post(client, key, [(name, data), ("again.jpg", data), ("broken.jpg", BROKEN)])
    body = _done(client, key, answer.json["id"])
    assert [i["status"] for i in body["items"]] == ["done", "done", "failed"]
    assert body["items"][0]["image_id"] == body["items"][1]["image_id"]
    zipped = client.get(f"/api/v1/jobs/{answer.json['id']}/results.zip", headers=key.headers)
    assert sorted(zipfile.ZipFile(io.BytesIO(zipped.data)).namelist()) == [
        "again.png", "photo-00.png"
    ]  # fmt: skip
    assert store.count("user-m") == 1
    assert app.extensions["cutout.keys"].store.get_key(made.id).credits_used == 1
    assert mongo.get_default_database()["job_inputs.files"].count_documents({}) == 0
    close_app(app)
