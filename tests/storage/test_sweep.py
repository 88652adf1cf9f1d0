"""The orphan sweep (issue 9, fault 4): what a crash leaves goes, while the server runs, and
the files of an add that is still alive (in another process, or paused) never do.

SQLite: a real add paused in another process holds its lock; SIGKILL releases it. MongoDB:
mongomock (no server can be installed here), with adds paused on threads; leases, fencing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from cutout.errors import StorageError
from cutout.faults import Faults
from cutout.storage import MongoStore, Record, SQLiteStore
from cutout.storage.mongo import PENDING
from cutout.storage.sweeper import Sweeper
from tests.storage.conftest import JPEG, PNG, Backend, gridfs_files, new_record


def image_files(data_dir: Path) -> list[str]:
    images = data_dir / "images"
    return sorted(p.name for p in images.iterdir()) if images.is_dir() else []


class Pause:
    """A fault action that blocks the add at a point until the test lets it go."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> None:
        self.reached.set()
        assert self.go.wait(30), "the test never released the paused add"


def add_in_thread(store: Any) -> tuple[threading.Thread, list[Record | Exception]]:
    outcome: list[Record | Exception] = []

    def add() -> None:
        try:
            outcome.append(store.add(new_record("alice"), limit=5))
        except Exception as exc:  # collected for the test to assert on
            outcome.append(exc)

    thread = threading.Thread(target=add)
    thread.start()
    return thread, outcome


# -- SQLite: a file lock per add ---------------------------------------------------------------

PAUSED_ADD = """
import sys
from pathlib import Path
from cutout.faults import Faults
from cutout.storage import SQLiteStore
from tests.storage.conftest import new_record

data_dir = Path(sys.argv[1])
faults = Faults.from_spec(sys.argv[2] + "=pause", data_dir)
SQLiteStore(data_dir, faults=faults).add(new_record("alice"), limit=5)
"""


@pytest.fixture
def paused_writer(tmp_path: Path) -> Iterator[Any]:
    """Start a real add in another process, paused at a point; yields a function to do so."""
    started: list[subprocess.Popen[bytes]] = []

    def start(data_dir: Path, point: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", PAUSED_ADD, str(data_dir), point],
            cwd=Path(__file__).resolve().parents[2],
        )
        started.append(process)
        marker = data_dir / f"fault-{point}"
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the writer exited before its pause point"
            assert time.monotonic() < deadline, "the writer never reached its pause point"
            time.sleep(0.02)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "point", ["write.original.half", "add.after_original", "add.after_processed"]
)
def test_a_live_writer_in_another_process_keeps_its_files(
    tmp_path: Path, paused_writer: Any, point: str
) -> None:
    data_dir = tmp_path / "data"
    writer = paused_writer(data_dir, point)
    during = image_files(data_dir)
    assert during  # the writer has files on disk and no row yet

    store = SQLiteStore(data_dir)
    assert store.orphans() == [] and store.sweep() == 0  # the writer holds its lock
    assert image_files(data_dir) == during

    writer.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock
    writer.wait()
    assert store.sweep() == len(during)
    assert image_files(data_dir) == [] and store.count("alice") == 0


@pytest.mark.parametrize("point", ["add.start", "add.after_row"])
def test_the_lock_file_of_a_dead_add_is_swept(
    tmp_path: Path, paused_writer: Any, point: str
) -> None:
    data_dir = tmp_path / "data"
    writer = paused_writer(data_dir, point)
    locks = data_dir / "locks"
    assert len(list(locks.iterdir())) == 1
    store = SQLiteStore(data_dir)
    store.sweep()
    assert len(list(locks.iterdir())) == 1  # held: the add is alive
    writer.kill()
    writer.wait()
    store.sweep()
    assert list(locks.iterdir()) == []
    assert store.count("alice") == (1 if point == "add.after_row" else 0)


def test_a_crash_is_swept_at_once_by_a_restarted_store(tmp_path: Path, paused_writer: Any) -> None:
    """No 60-second wait: a file whose lock is free belongs to nobody, however new it is."""
    data_dir = tmp_path / "data"
    writer = paused_writer(data_dir, "add.after_processed")
    writer.kill()
    writer.wait()
    assert len(image_files(data_dir)) == 2

    SQLiteStore(data_dir).ping()  # first use: the sweep at start

    assert image_files(data_dir) == []


def test_a_paused_add_survives_sweeps_then_commits(tmp_path: Path) -> None:
    pause = Pause()
    store = SQLiteStore(tmp_path / "data", faults=Faults({"add.after_processed": pause}))
    thread, outcome = add_in_thread(store)
    assert pause.reached.wait(30)

    other_worker = SQLiteStore(tmp_path / "data")
    for _ in range(3):
        assert other_worker.sweep() == 0

    pause.go.set()
    thread.join(30)
    (record,) = outcome
    assert isinstance(record, Record)
    assert store.read_image("alice", record.id, "processed")[1] == PNG


def test_an_add_that_commits_while_the_sweep_looks_keeps_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep listed the files before the row existed; it re-reads the row under the lock."""
    store = SQLiteStore(tmp_path / "data")
    pause = Pause()
    writer = SQLiteStore(tmp_path / "data", faults=Faults({"add.after_processed": pause}))
    thread, outcome = add_in_thread(writer)
    assert pause.reached.wait(30)
    with store._connection("test") as conn:
        stale = store._unclaimed(conn, 0)  # the snapshot: files, no row
    assert len(stale) == 1
    pause.go.set()
    thread.join(30)

    monkeypatch.setattr(store, "_unclaimed", lambda conn, min_age: stale)
    assert store.sweep() == 0

    (record,) = outcome
    assert isinstance(record, Record)
    assert store.read_image("alice", record.id, "original")[1] == JPEG


def test_a_delete_cut_short_leaves_files_the_sweep_removes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data")
    record = store.add(new_record(), limit=5)
    with store._connection("test") as conn:  # the row went, the process died before the files
        conn.execute("DELETE FROM records WHERE id = ?", (record.id,))
    assert store.sweep() == 2 and image_files(tmp_path / "data") == []


def test_the_sweeper_runs_periodically_while_the_server_runs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data")
    store.ping()
    orphan = tmp_path / "data" / "images" / f"{'ab' * 12}.original"
    swept: list[int] = []
    sweeper = Sweeper(store, 0.05, on_swept=swept.append).start()
    try:
        orphan.write_bytes(b"left by a crash")
        deadline = time.monotonic() + 10
        while orphan.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sweeper.stop()
    assert not orphan.exists() and 1 in swept


def test_a_failing_sweep_is_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        calls = 0

        def sweep(self) -> int:
            self.calls += 1
            raise StorageError("Could not remove orphaned images: disk I/O error.")

    broken = Broken()
    sweeper = Sweeper(broken, 0.02).start()
    deadline = time.monotonic() + 10
    while broken.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    sweeper.stop()
    assert broken.calls >= 2 and "orphan sweep failed" in caplog.text


# -- MongoDB: leases and fencing ---------------------------------------------------------------


def mongo_store(backend: Backend, faults: Faults) -> MongoStore:
    """A second store on *backend*'s database (another worker), with fault points."""
    assert isinstance(backend.store, MongoStore)
    store = backend.store
    return MongoStore(store._uri, client_factory=store._client_factory, faults=faults)


def test_mongo_a_paused_add_with_a_fresh_lease_is_left_alone(mongo_backend: Backend) -> None:
    pause = Pause()
    writer = mongo_store(mongo_backend, Faults({"add.after_processed": pause}))
    thread, outcome = add_in_thread(writer)
    assert pause.reached.wait(30)
    assert mongo_backend.stored_images() == 2

    assert mongo_backend.store.sweep(min_age=0) == 0

    pause.go.set()
    thread.join(30)
    (record,) = outcome
    assert isinstance(record, Record)
    assert mongo_backend.store.read_image("alice", record.id, "processed")[1] == PNG
    assert mongo_backend.database is not None
    assert mongo_backend.database[PENDING].count_documents({}) == 0  # lease released


@pytest.mark.parametrize("point", ["add.after_original", "add.after_processed"])
def test_mongo_an_add_whose_lease_expired_is_fenced_and_fails_cleanly(
    mongo_backend: Backend, point: str
) -> None:
    """A writer stalled past its lease: the sweep takes its files, the writer cannot commit."""
    pause = Pause()
    writer = mongo_store(mongo_backend, Faults({point: pause}))
    thread, outcome = add_in_thread(writer)
    assert pause.reached.wait(30)

    store = mongo_backend.store
    assert isinstance(store, MongoStore)
    assert store.sweep(min_age=0, lease=0) >= 1
    assert mongo_backend.stored_images() == 0

    pause.go.set()
    thread.join(30)
    (error,) = outcome
    assert isinstance(error, StorageError) and "abandoned" in str(error)
    assert mongo_backend.store.count("alice") == 0 and mongo_backend.store.list("alice") == []
    assert mongo_backend.stored_images() == 0  # and no chunks without a file (checked there)


def test_mongo_a_crash_mid_upload_leaves_chunks_the_lease_finds(mongo_backend: Backend) -> None:
    """GridFS writes chunks before the file document: a crash in between leaves bare chunks."""
    database = mongo_backend.database
    assert database is not None
    mongo_backend.store.ping()
    record_id, file_id = ObjectId(), ObjectId()
    database[PENDING].insert_one(
        {"_id": record_id, "files": [file_id, ObjectId()], "heartbeat": _ago(hours=1)}
    )
    database["images.chunks"].insert_one({"files_id": file_id, "n": 0, "data": b"half a jpeg"})

    mongo_backend.store.sweep()

    assert database["images.chunks"].count_documents({}) == 0
    assert database[PENDING].count_documents({}) == 0
    tombstone = database["images"].find_one({"_id": record_id})
    assert tombstone is not None and tombstone["tombstone"] is True


def test_mongo_a_committed_add_with_a_leftover_lease_keeps_its_images(
    mongo_backend: Backend,
) -> None:
    """A crash after the insert, before the lease was released: the record is whole."""
    database = mongo_backend.database
    assert database is not None
    record = mongo_backend.store.add(new_record("alice"), limit=5)
    doc = database["images"].find_one({"_id": ObjectId(record.id)})
    assert doc is not None
    files = [doc[kind]["file_id"] for kind in ("original", "processed")]
    database[PENDING].insert_one({"_id": doc["_id"], "files": files, "heartbeat": _ago(hours=1)})

    mongo_backend.store.sweep()

    assert mongo_backend.store.read_image("alice", record.id, "original")[1] == JPEG
    assert mongo_backend.stored_images() == 2
    assert database[PENDING].count_documents({}) == 0


def test_mongo_tombstones_are_invisible(mongo_backend: Backend) -> None:
    database = mongo_backend.database
    assert database is not None
    mongo_backend.store.ping()
    tombstone = ObjectId()
    database[PENDING].insert_one({"_id": tombstone, "files": [], "heartbeat": _ago(hours=1)})
    mongo_backend.store.sweep()
    record = mongo_backend.store.add(new_record("alice"), limit=1)  # the limit counts records
    assert mongo_backend.store.list("alice") == [record]
    assert mongo_backend.store.count("alice") == 1
    indexes = database["images"].index_information()
    assert indexes["tombstones"]["expireAfterSeconds"] == 7 * 86400


def _ago(hours: float) -> Any:
    from cutout.storage.mongo import _now

    return _now() - timedelta(hours=hours)


def test_the_sweeper_sweeps_mongo_too(mongo_backend: Backend) -> None:
    database = mongo_backend.database
    assert database is not None
    mongo_backend.store.ping()
    file_id = ObjectId()
    database[PENDING].insert_one({"_id": ObjectId(), "files": [file_id], "heartbeat": _ago(1)})
    database["images.chunks"].insert_one({"files_id": file_id, "n": 0, "data": b"x"})
    sweeper = Sweeper(mongo_backend.store, 0.05).start()
    try:
        deadline = time.monotonic() + 10
        while database["images.chunks"].count_documents({}) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sweeper.stop()
    assert gridfs_files(database) == 0 and database["images.chunks"].count_documents({}) == 0


def test_no_fault_points_outside_testing() -> None:
    from cutout.config import Settings
    from cutout.errors import ConfigError

    for env in ("production", "development"):
        with pytest.raises(ConfigError, match="CUTOUT_TEST_FAULTS is for tests only"):
            Settings.from_env(
                environ={"CUTOUT_ENV": env, "CUTOUT_TEST_FAULTS": "add.start=pause"},
                dotenv_path=None,
            )
    assert os.environ.get("CUTOUT_TEST_FAULTS") is None
