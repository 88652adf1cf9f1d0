"""SQLiteStore details the contract does not cover: files on disk, WAL, recovery, failures."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from cutout.errors import LimitReached, StorageError
from cutout.storage import Record, SQLiteStore
from tests.storage.conftest import JPEG, PNG, new_record


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_images_are_files_named_by_record_id(data_dir: Path) -> None:
    record = SQLiteStore(data_dir).add(new_record(), limit=5)

    images = data_dir / "images"
    assert sorted(p.name for p in images.iterdir()) == [
        f"{record.id}.original", f"{record.id}.processed",
    ]  # fmt: skip
    assert (images / f"{record.id}.original").read_bytes() == JPEG
    assert (images / f"{record.id}.processed").read_bytes() == PNG


def test_database_is_in_wal_mode_with_the_user_index(data_dir: Path) -> None:
    SQLiteStore(data_dir).ping()

    with sqlite3.connect(data_dir / "cutout.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        index = conn.execute("PRAGMA index_info(records_user_created)").fetchall()
    assert [row[2] for row in index] == ["user_id", "created_on"]


def test_unusable_database_path_fails_ping_then_recovers(data_dir: Path) -> None:
    (data_dir / "cutout.sqlite3").mkdir(parents=True)  # a directory where the file should be
    store = SQLiteStore(data_dir)

    with pytest.raises(StorageError, match="Could not reach the database"):
        store.ping()
    with pytest.raises(StorageError):
        store.count("alice")
    with pytest.raises(StorageError):
        store.add(new_record(), limit=5)

    (data_dir / "cutout.sqlite3").rmdir()  # the volume is fixed: no restart needed
    store.ping()
    assert store.add(new_record(), limit=5).user_id == "alice"


def test_a_failed_rename_into_place_leaves_no_temp_file(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(data_dir)
    store.ping()

    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)

    with pytest.raises(StorageError, match="No space left on device"):
        store.add(new_record(), limit=5)
    assert list((data_dir / "images").iterdir()) == []
    assert store.count("alice") == 0


def test_a_missing_image_file_is_a_storage_error(data_dir: Path) -> None:
    store = SQLiteStore(data_dir)
    record = store.add(new_record(), limit=5)
    (data_dir / "images" / f"{record.id}.processed").unlink()

    with pytest.raises(StorageError, match="Could not read the processed image"):
        store.read_image("alice", record.id, "processed")


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_orphaned_files_are_swept_when_a_store_starts(data_dir: Path) -> None:
    live = SQLiteStore(data_dir).add(new_record(), limit=5)
    images = data_dir / "images"
    old_orphan = images / f"{'ab' * 12}.original"  # a crash between the files and the row
    old_temp = images / f".{'cd' * 12}.processed.x1y2.tmp"  # a crash mid-write
    fresh = images / f"{'ef' * 12}.original"  # a crash a second ago: no writer holds it
    for path in (old_orphan, old_temp, fresh):
        path.write_bytes(b"partial")
    for path in (old_orphan, old_temp, images / f"{live.id}.original"):
        _age(path, 3600)

    restarted = SQLiteStore(data_dir)
    assert restarted.orphans() == []  # the first call swept them all, whatever their age

    assert sorted(p.name for p in images.iterdir()) == sorted(
        [f"{live.id}.original", f"{live.id}.processed"]
    )
    assert restarted.read_image("alice", live.id, "original")[1] == JPEG


def test_two_store_instances_share_one_limit(data_dir: Path) -> None:
    """Like two gunicorn workers: separate objects, one database file, one limit."""
    stores = [SQLiteStore(data_dir), SQLiteStore(data_dir)]
    start = threading.Barrier(12)
    outcomes: list[Record | Exception] = []

    def add(store: SQLiteStore) -> None:
        start.wait()
        try:
            outcomes.append(store.add(new_record(), limit=4))
        except LimitReached as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=add, args=(stores[i % 2],)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(isinstance(o, Record) for o in outcomes) == 4
    assert sum(isinstance(o, LimitReached) for o in outcomes) == 8
    assert len(list((data_dir / "images").iterdir())) == 8


def test_a_database_from_the_first_release_is_brought_up_to_date(data_dir: Path) -> None:
    """A file made by the first release (schema 1, user_version 1) keeps its rows; migration
    0002 adds the confidence columns, NULL for the rows that existed (not scored), 0004 the
    touch-up revision (0) and the table of edits and thumbnails (empty)."""
    from cutout.storage.sqlite import _statements, migrations

    data_dir.mkdir(parents=True)
    with sqlite3.connect(data_dir / "cutout.sqlite3") as conn:  # a version-1 database
        for statement in _statements(dict(migrations())[1]):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO records VALUES (1, 'abcdefabcdefabcdefabcdef', 'alice', 'old', "
            "'2024-01-01 00:00:00', 'local:isnet', 'isnet', 'image/jpeg', 3, 1, 1, 'x', "
            "'image/png', 3, 1, 1, 'y')"
        )
    store = SQLiteStore(data_dir)
    [old] = store.list("alice")
    assert (old.image_name, old.confidence, old.needs_review) == ("old", None, None)
    assert (old.edited, old.revision) == (False, 0)  # migration 0004: not touched up
    scored = store.add(
        dataclasses.replace(new_record(), confidence=0.5, needs_review=True), limit=5
    )
    assert store.get("alice", scored.id).confidence == 0.5


def test_improvements_kept_inside_rows_survive_version_5_and_can_be_purged(
    data_dir: Path,
) -> None:
    from cutout.storage import SQLiteKeyStore
    from cutout.storage.sqlite import _statements, migrations

    data_dir.mkdir(parents=True)
    with sqlite3.connect(data_dir / "cutout.sqlite3") as conn:  # a version-4 database
        for number, sql in migrations():
            if number <= 4:
                for statement in _statements(sql):
                    conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
        conn.execute(
            "INSERT INTO improvements VALUES ('i1', 'k1', 'alice', '2024-01-01 00:00:00', "
            "'car.jpg', NULL, 'image/jpeg', 3, X'FFD8FF')"
        )
    keys = SQLiteKeyStore(SQLiteStore(data_dir))
    info, data = keys.read_improvement("i1")
    assert (info.image_filename, data) == ("car.jpg", b"\xff\xd8\xff")
    assert keys.purge_improvements() == (1, 3)


def test_migrations_are_numbered_and_run_once_when_stores_start_together(
    data_dir: Path,
) -> None:
    from cutout.storage.sqlite import migrations

    numbers = [number for number, _ in migrations()]
    assert numbers[0] == 1 and numbers == sorted(set(numbers))
    errors: list[BaseException] = []

    def start() -> None:
        try:
            SQLiteStore(data_dir).ping()
        except BaseException as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sqlite3.connect(data_dir / "cutout.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == numbers[-1]


def test_a_superseded_edit_that_could_not_be_removed_is_swept(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old edit's file goes after the row points at the new one; if that removal fails
    (or the process dies first), the sweep finds a file no row names, though its record lives."""
    import cutout.storage.sqlite
    from tests.storage.test_contract import EDIT

    store = SQLiteStore(data_dir)
    record = store.add(new_record(), limit=5)
    store.save_edit("alice", record.id, EDIT)
    [first] = (data_dir / "images").glob(f"{record.id}.edit-*")
    with monkeypatch.context() as patch:
        patch.setattr(cutout.storage.sqlite, "_remove_files", lambda paths: None)
        store.save_edit("alice", record.id, EDIT)

    assert store.orphans(min_age=0) == [first]
    assert store.sweep(min_age=0) == 1
    assert store.read_image("alice", record.id, "processed")[1] == EDIT.data
    assert len(list((data_dir / "images").iterdir())) == 3


def test_the_store_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Under the usual umask (022) the database and folders were 0644/0755: every local user
    could read everyone's photos."""
    old = os.umask(0o022)
    try:
        data_dir = tmp_path / "new" / "data"
        store = SQLiteStore(data_dir)
        store.add(new_record(), limit=5)
        with sqlite3.connect(data_dir / "cutout.sqlite3") as conn:
            conn.execute("PRAGMA user_version").fetchone()
    finally:
        os.umask(old)
    for folder in (data_dir, data_dir / "images", data_dir / "locks"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in [*data_dir.glob("cutout.sqlite3*"), *(data_dir / "images").iterdir()]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
