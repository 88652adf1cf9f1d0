"""The embedded default (no CUTOUT_QUEUE_URL): the web process runs job items itself, and a
server killed mid-job picks the job up again when it is started again."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from cutout.apikeys import KeyService
from cutout.storage import SQLiteStore, open_key_store
from tests.conftest import Photos
from tests.jobs.conftest import small_photos, wait_for
from tests.live import LiveServer


def test_a_job_survives_a_killed_web_server(tmp_path: Path, photos: Photos) -> None:
    data = tmp_path / "data"
    env = {"CUTOUT_JOB_LEASE_SECONDS": "3", "USER_LIMIT": "100"}
    store = SQLiteStore(data)
    keys = KeyService(open_key_store(store))
    key, secret = keys.create("agency", "portraits", credits=50)
    session = requests.Session()
    session.headers["X-Api-Key"] = secret
    files = [("images", (n, b, "image/jpeg")) for n, b in small_photos(photos, 6, side=256)]
    with LiveServer(data, env) as server:
        answer = session.post(server.url + "/api/v1/jobs", files=files, timeout=60)
        assert answer.status_code == 202, answer.text
        path = answer.json()["links"]["self"]
        deadline = time.monotonic() + 120
        while True:  # kill it while an item runs, after at least one is done
            body = session.get(server.url + path, timeout=10).json()
            if body["succeeded"] >= 1 and body["running"] >= 1:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        server.kill()
    assert body["succeeded"] < 6
    with LiveServer(data, env) as again:  # its first request (the readiness probe) resumes
        done = wait_for(session, again.url + path, timeout=180)
    assert done["succeeded"] == 6 and done["failed"] == 0, done
    assert any(int(i["attempts"]) >= 2 for i in done["items"])  # type: ignore[attr-defined]
    assert store.count("agency") == 6
    assert keys.store.get_key(key.id).credits_used == 6
