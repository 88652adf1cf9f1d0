"""The embedded default (no CUTOUT_QUEUE_URL): the web process runs job items itself, and a
server killed mid-job picks the job up again when it is started again."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest
import requests

from cutout.apikeys import KeyService
from cutout.errors import NotFound
from cutout.jobs.engine import ORPHAN_INPUT_AGE
from cutout.storage import SQLiteStore, open_key_store
from cutout.storage.jobs import NewItem, NewJob
from cutout.storage.keys import ApiKey
from cutout.storage.sqlite_jobs import SQLiteJobStore
from tests.conftest import Photos
from tests.jobs.conftest import small_photos, wait_for
from tests.live import LiveServer


def agency_key(data: Path) -> tuple[SQLiteStore, KeyService, ApiKey, requests.Session]:
    """The store in *data*, its key service, an API key with 50 credits, and a session
    sending it."""
    store = SQLiteStore(data)
    keys = KeyService(open_key_store(store))
    key, secret = keys.create("agency", "portraits", credits=50)
    session = requests.Session()
    session.headers["X-Api-Key"] = secret
    return store, keys, key, session


def test_a_job_survives_a_killed_web_server(tmp_path: Path, photos: Photos) -> None:
    data = tmp_path / "data"
    env = {"CUTOUT_JOB_LEASE_SECONDS": "3", "USER_LIMIT": "100"}
    store, keys, key, session = agency_key(data)
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


def test_a_job_survives_a_forward_pass_that_never_returns(tmp_path: Path, photos: Photos) -> None:
    """CUTOUT_PASS_TIMEOUT ends the web worker whose pass is stuck (the ``hang`` fault holds
    the GIL, so the worker answers nothing meanwhile): its stacks are in the log, gunicorn
    starts another worker, and with the item's lease no longer renewed that worker runs the
    item again. The job ends whole, each photo stored and charged once."""
    data = tmp_path / "data"
    env = {
        "CUTOUT_ENV": "testing",
        "CUTOUT_TEST_FAULTS": "engine.pass=hang",
        "CUTOUT_PASS_TIMEOUT": "5",
        "CUTOUT_JOB_LEASE_SECONDS": "3",
        "USER_LIMIT": "100",
    }
    store, keys, key, session = agency_key(data)
    files = [("images", (n, b, "image/jpeg")) for n, b in small_photos(photos, 3, side=256)]
    with LiveServer(data, env) as server:
        before = server.workers()
        (data / "arm-engine.pass").touch()
        answer = session.post(server.url + "/api/v1/jobs", files=files, timeout=60)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 120
        while not (data / "fault-engine.pass").exists():  # an item's pass is stuck
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.wait_ready()  # a new worker: the stuck one answers nothing, then is gone
        assert server.workers() != before
        done = wait_for(session, server.url + answer.json()["links"]["self"], timeout=180)
    assert done["succeeded"] == 3 and done["failed"] == 0, done
    assert [int(i["attempts"]) for i in done["items"]].count(2) == 1  # type: ignore[attr-defined]
    assert store.count("agency") == 3
    assert keys.store.get_key(key.id).credits_used == 3
    log = server.log.read_text()
    assert "Timeout (0:00:0" in log and "cutout/engine/local.py" in log
    assert "exited with code 1" in log  # gunicorn's line, before it starts the next worker


def finished_job(jobs: SQLiteJobStore, ended: float) -> str:
    """A one-photo job of alice's, done at *ended* (epoch seconds)."""
    item = NewItem("a.jpg", secrets.token_hex(12), jobs.put_input(iter([b"photo bytes"])))
    job = jobs.add_job(NewJob("alice", "k1", {}, "opt"), [item], ended - 2, ended - 1)
    claimed = jobs.claim(jobs.list_items(job.id)[0].id, ended - 1, 60.0)
    assert claimed and jobs.finish(claimed.id, 1, ended, image_id="d" * 24)
    assert jobs.complete_job(job.id, ended)
    return job.id


def test_the_reaper_sweeps_cut_short_submissions_and_jobs_past_their_retention(
    tmp_path: Path,
) -> None:
    """Photos stored before the web process died, with no job saved to name them: a day old,
    the running server's reaper removes them; a recent one is left (it may be mid-upload).
    A job that ended more than CUTOUT_JOB_RETENTION_DAYS ago goes; a recent one stays."""
    data = tmp_path / "data"
    jobs = SQLiteJobStore(SQLiteStore(data))
    old, recent = (jobs.put_input(iter([b"photo bytes"])) for _ in range(2))
    day_ago = time.time() - ORPHAN_INPUT_AGE - 60
    os.utime(jobs.inputs_dir / old.ref, (day_ago, day_ago))
    expired = finished_job(jobs, time.time() - 3 * 86400)
    kept = finished_job(jobs, time.time() - 86400)
    env = {"USER_LIMIT": "100", "CUTOUT_JOB_RETENTION_DAYS": "2"}
    with LiveServer(data, env) as server:
        requests.get(server.url + "/ready", timeout=30)  # the job system starts with the app
        deadline = time.monotonic() + 60
        while (jobs.inputs_dir / old.ref).exists() or jobs.list_items(expired):
            assert time.monotonic() < deadline, "the orphaned photo or the old job is still there"
            time.sleep(0.2)
    assert jobs.read_input(recent.ref) == b"photo bytes"
    with pytest.raises(NotFound):
        jobs.get_job("alice", expired)
    assert jobs.get_job("alice", kept).status == "done"
