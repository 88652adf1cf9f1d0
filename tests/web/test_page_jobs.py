"""The page's job routes (``POST /jobs``, ``GET /jobs/<id>``): cookie + CSRF, the page user's
own jobs only, items becoming records of the history under USER_LIMIT. Real app, real model,
the embedded job runner; the page's side is in tests/web/test_browser_jobs.py."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from cutout.errors import LimitReached
from tests.web.conftest import Actions

pytestmark = pytest.mark.model


def send_job(
    actions: Actions, photos: list[tuple[str, bytes]], token: str | None, **fields: str
) -> Any:
    form: MultiDict[str, Any] = MultiDict(list(fields.items()))
    form.update([("images", FileStorage(io.BytesIO(data), filename=name)) for name, data in photos])
    boundary, body = encode_multipart(form)
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["X-CSRFToken"] = token
    return actions.client.post(
        "/jobs",
        data=body,
        headers=headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def wait_done(actions: Actions, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = actions.client.get(f"/jobs/{job_id}").get_json()
        if job["status"] == "done":
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not done: {job}")


def test_the_page_knows_its_threshold(actions: Actions) -> None:
    page = actions.client.get("/").get_data(as_text=True)
    assert 'data-job-threshold="20"' in page


def test_a_job_needs_the_csrf_token(actions: Actions, photo: Path) -> None:
    refused = send_job(actions, [("coffee.jpg", photo.read_bytes())], token=None)
    assert refused.status_code == 400
    assert actions.records() == []


def test_a_page_job_fills_the_history_up_to_the_limit_and_is_the_users_own(
    app: Flask, actions: Actions, photo: Path
) -> None:
    """USER_LIMIT is 3 here: of four photos (and a broken one), three become records and one
    fails with the limit's message; another browser cannot see the job."""
    data = photo.read_bytes()
    photos = [(f"cup{n}.jpg", data + bytes(n)) for n in range(5)]  # different files
    photos[1] = ("notes.jpg", b"these are notes, not a photo")
    created = send_job(actions, photos, actions.token())
    assert created.status_code == 202, created.get_json()
    job = wait_done(actions, created.get_json()["id"])
    states = {Path(i["name"]).stem: (i["status"], i["error"]) for i in job["items"]}
    assert states["notes"][0] == "failed" and "not an image" in str(states["notes"][1])
    cups = [states[f"cup{n}"] for n in (0, 2, 3, 4)]
    assert sorted(status for status, _ in cups) == ["done", "done", "done", "failed"]
    assert [error for status, error in cups if status == "failed"] == [LimitReached.MESSAGE]
    records = actions.records()
    assert len(records) == 3
    assert {str(r["image_name"]) for r in records} <= {"cup0", "cup2", "cup3", "cup4"}
    assert {r["_id"] for r in records} == {i["image_id"] for i in job["items"] if i["image_id"]}
    stranger = app.test_client()
    assert stranger.get(f"/jobs/{job['id']}").status_code == 404


def test_a_page_job_runs_in_the_mode_chosen_on_the_page(actions: Actions, photo: Path) -> None:
    photos = [("cup.jpg", photo.read_bytes())]
    refused = send_job(actions, photos, actions.token(), quality="turbo")
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_quality"
    assert actions.records() == []  # refused before anything was stored
    created = send_job(actions, photos, actions.token(), quality="fast")
    assert created.status_code == 202, created.get_json()
    wait_done(actions, created.get_json()["id"])
    (record,) = actions.records()
    assert record["model"] == "isnet"  # fast: ISNet alone (balanced adds MODNet)
