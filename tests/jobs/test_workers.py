"""Batch jobs on Celery + a real redis-server, with real `cutout worker` processes and the real
server (`cutout serve`): faults in the middle of a job, and every item done exactly once."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import requests

from cutout.apikeys import KeyService
from cutout.storage import SQLiteStore, open_job_store, open_key_store
from tests.conftest import Photos
from tests.jobs.conftest import Redis, Worker, small_photos, wait_for
from tests.live import LiveServer

LEASE = 3  # seconds: a killed worker's item is taken again ~2 leases later
#: photos in the job: enough that it still runs after the faults on a machine twice as fast as
#: a Zen 3 (30 until stop 30; 20 saved about 20 s of CI there)
PHOTOS = 20


def test_20_photos_survive_a_killed_worker_and_a_restarted_redis(
    tmp_path: Path, photos: Photos, redis_server: Redis
) -> None:
    data = tmp_path / "data"
    env = {
        "CUTOUT_QUEUE_URL": redis_server.url,
        "CUTOUT_JOB_LEASE_SECONDS": str(LEASE),
        "USER_LIMIT": "100",
    }
    store = SQLiteStore(data)
    keys = KeyService(open_key_store(store))
    key, secret = keys.create("shop", "catalogue sync", credits=100)
    session = requests.Session()
    session.headers["X-Api-Key"] = secret
    with LiveServer(data, env) as server, Worker(data, env, "a") as first:
        files = [("images", (n, b, "image/jpeg")) for n, b in small_photos(photos, PHOTOS)]
        answer = session.post(server.url + "/api/v1/jobs", files=files, timeout=60)
        assert answer.status_code == 202, answer.text
        job_url = server.url + answer.json()["links"]["self"]
        assert answer.json()["status"] == "queued" and answer.json()["total"] == PHOTOS

        # SIGKILL the only worker while it runs an item: that item must run again elsewhere.
        victim = _running_item(session, job_url)
        first.kill()
        killed_at = time.monotonic()
        with Worker(data, env, "b"), Worker(data, env, "c"):
            # The zip while the job runs: what is done so far.
            _wait_succeeded(session, job_url, 3)
            zipped = session.get(job_url + "/results.zip", timeout=60)
            assert zipped.status_code == 200
            names = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
            assert 3 <= len(names) < PHOTOS and all(n.endswith(".png") for n in names)

            # Redis killed (its messages lost) and started again on the same port mid-job.
            redis_server.kill()
            time.sleep(1)
            during = session.get(job_url, timeout=30)  # rate limits fall back to memory
            assert during.status_code == 200, during.text
            time.sleep(1)
            redis_server.start()
            assert session.get(job_url, timeout=10).json()["status"] == "running"

            recovered = _wait_item_done(session, job_url, victim)
            assert recovered - killed_at < 120, (
                "the killed worker's item did not run again in 2 min"
            )
            body = wait_for(session, job_url + "?per_page=100", timeout=240)
            final = session.get(job_url + "/results.zip", timeout=60).content
            assert len(zipfile.ZipFile(io.BytesIO(final)).namelist()) == PHOTOS

    assert body["succeeded"] == PHOTOS and body["failed"] == 0, body
    items = body["items"]
    assert isinstance(items, list) and all(i["status"] == "done" for i in items)
    assert next(i for i in items if i["index"] == victim)["attempts"] >= 2
    assert len({i["image_id"] for i in items}) == PHOTOS
    # Exactly once: one record and one credit per item, whatever ran twice.
    assert store.count("shop") == PHOTOS
    assert keys.store.get_key(key.id).credits_used == PHOTOS
    job = open_job_store(store).get_job("shop", str(body["id"]))
    assert job.status == "done" and job.finished_at is not None


def _wait_succeeded(session: requests.Session, job_url: str, n: int) -> None:
    deadline = time.monotonic() + 120
    while session.get(job_url, timeout=10).json()["succeeded"] < n:
        assert time.monotonic() < deadline, f"fewer than {n} items done after 2 min"
        time.sleep(0.2)


def _running_item(session: requests.Session, job_url: str) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        items = session.get(job_url, timeout=10).json()["items"]
        running = [i["index"] for i in items if i["status"] == "running"]
        if running:
            return int(running[0])
        time.sleep(0.1)
    raise AssertionError("no item started running")


def _wait_item_done(session: requests.Session, job_url: str, index: int) -> float:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        items = session.get(job_url + "?per_page=100", timeout=10).json()["items"]
        if next(i for i in items if i["index"] == index)["status"] == "done":
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"item {index} never finished")
