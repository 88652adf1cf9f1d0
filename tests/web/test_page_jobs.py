"""The page's batch jobs: a drop over the threshold is one POST /jobs (cookie user, CSRF),
followed with GET /jobs/<id>; the results are ordinary records of the browser's user."""

from __future__ import annotations

import io
import time

from flask.testing import FlaskClient

from tests.conftest import Photos
from tests.jobs.conftest import small_photos
from tests.web.conftest import Actions


def test_a_page_job_lands_in_the_browsers_history(
    client: FlaskClient, actions: Actions, photos: Photos
) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'data-job-threshold="20"' in page
    files = [(io.BytesIO(b), n) for n, b in small_photos(photos, 2)]
    refused = client.post("/jobs", data={"images": files}, content_type="multipart/form-data")
    assert refused.status_code == 400  # no CSRF token: like every cookie route
    files = [(io.BytesIO(b), n) for n, b in small_photos(photos, 2)]
    answer = client.post(
        "/jobs",
        data={"images": files},
        headers={"X-CSRFToken": actions.token(), "Accept": "application/json"},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.get_data(as_text=True)
    job_id = answer.get_json()["id"]
    deadline = time.monotonic() + 120
    while (body := client.get(f"/jobs/{job_id}").get_json())["status"] != "done":
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    assert [i["status"] for i in body["items"]] == ["done", "done"]
    assert {r["_id"] for r in actions.records()} == {i["image_id"] for i in body["items"]}
    other = client.application.test_client()  # another browser: another user
    assert other.get(f"/jobs/{job_id}").status_code == 404
