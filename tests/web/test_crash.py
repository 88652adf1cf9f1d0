"""Crash consistency of the real server (issue 9): SIGKILL in the middle of an upload.

The server (``cutout serve``: gunicorn, the real model, SQLite) runs with a fault point
(``CUTOUT_TEST_FAULTS``, honoured only with ``CUTOUT_ENV=testing``) that pauses the upload at
one point of its writes; the test waits until it is there, kills the master and its worker
with SIGKILL at the same instant, and restarts at once with the next point. Each restart
must find: no half record, no orphan file once the sweep (at start) has run, every listed
image readable with its recorded checksum, ``PRAGMA integrity_check`` ok. Then a storage
fault injected between the two image writes must leave nothing behind, with no restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import requests

from tests.live import LiveServer
from tests.web.test_live import browser_session

#: Before, during and after each image write, and after the row: in the order they happen.
POINTS = (
    "add.start",
    "write.original.half",
    "add.after_original",
    "write.processed.half",
    "add.after_processed",
    "add.after_row",
)
SECRET = "crash-test-" + "k" * 40  # the same key across restarts: the same user


def server(data_dir: Path, faults: str = "") -> LiveServer:
    env = {
        "CUTOUT_ENV": "testing",
        "APP_SECRET_KEY": SECRET,
        "USER_LIMIT": "50",
        "CUTOUT_METRICS_PORT": "0",
    }
    if faults:
        env["CUTOUT_TEST_FAULTS"] = faults
    return LiveServer(data_dir, env)


def assert_consistent(url: str, session: requests.Session, data_dir: Path) -> list[str]:
    """Every record whole and readable, no other file, a sound database; the record ids."""
    records = session.get(url + "/", headers={"Accept": "application/json"}, timeout=30).json()
    ids = []
    for record in records["records"]:
        ids.append(record["_id"])
        for kind in ("original", "processed"):
            image = session.get(url + record[f"{kind}_url"], timeout=30)
            assert image.status_code == 200, (record["_id"], kind)
            assert hashlib.sha256(image.content).hexdigest() == record[kind]["sha256"]
    on_disk = sorted(p.name for p in (data_dir / "images").iterdir())
    assert list((data_dir / "locks").iterdir()) == []
    with sqlite3.connect(data_dir / "cutout.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == len(ids)
        # the records' thumbnails (and edits), each a file a row names
        named = [row[0] for row in conn.execute("SELECT file FROM record_images")]
    finals = [f"{i}.{kind}" for i in ids for kind in ("original", "processed")]
    assert on_disk == sorted(finals + named)
    return ids


def upload_in_background(url: str, session: requests.Session, token: str, data: bytes) -> None:
    def post() -> None:
        with contextlib.suppress(requests.ConnectionError):  # killed under it: the point
            session.post(
                url + "/",
                headers={"Accept": "application/json"},
                data={"name": "interrupted", "csrf_token": token},
                files={"image": ("photo.jpg", data, "image/jpeg")},
                timeout=120,
            )

    threading.Thread(target=post, daemon=True).start()


def wait_for(marker: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert time.monotonic() < deadline, f"the upload never reached {marker.name}"
        time.sleep(0.02)


def test_sigkill_at_every_point_of_an_upload_then_restart_at_once(
    tmp_path: Path, photo: Path
) -> None:
    data_dir = tmp_path / "data"
    data = photo.read_bytes()
    session: requests.Session | None = None
    token = ""
    committed = 0
    for point in POINTS:
        with server(data_dir, f"{point}=pause") as running:
            if session is None:
                session, token = browser_session(running.url)
            assert len(assert_consistent(running.url, session, data_dir)) == committed
            upload_in_background(running.url, session, token, data)
            marker = data_dir / f"fault-{point}"
            wait_for(marker)
            assert (data_dir / "images").is_dir()
            running.kill()
            marker.unlink()
        committed += point == "add.after_row"  # the row was committed before the kill
    assert session is not None
    with server(data_dir) as running:
        ids = assert_consistent(running.url, session, data_dir)
        assert len(ids) == committed == 1
        upload = session.post(  # and the store still works
            running.url + "/",
            headers={"Accept": "application/json"},
            data={"name": "after", "csrf_token": token},
            files={"image": ("photo.jpg", data, "image/jpeg")},
            timeout=120,
        )
        assert upload.status_code == 201
        assert len(assert_consistent(running.url, session, data_dir)) == 2


def test_a_storage_fault_between_the_two_image_writes_leaves_nothing(
    tmp_path: Path, photo: Path
) -> None:
    data_dir = tmp_path / "data"
    with server(data_dir, "add.after_original=fail,write.processed.half=fail") as running:
        session, token = browser_session(running.url)
        response = session.post(
            running.url + "/",
            headers={"Accept": "application/json"},
            data={"name": "failing disk", "csrf_token": token},
            files={"image": ("photo.jpg", photo.read_bytes(), "image/jpeg")},
            timeout=120,
        )
        assert response.status_code == 503
        assert response.json()["error"] == "storage_failed"
        assert assert_consistent(running.url, session, data_dir) == []  # no restart, no sweep
        assert requests.get(running.url + "/ready", timeout=10).status_code == 200
