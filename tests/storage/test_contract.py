"""The ImageStore contract, run on each backend: [sqlite], [mongomock], [mongo_real]."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cutout.config import Settings
from cutout.errors import LimitReached, NotFound, StorageError
from cutout.storage import (
    KINDS,
    ImageInfo,
    MongoStore,
    NewImage,
    Record,
    SQLiteStore,
    Thumbnail,
    open_store,
)
from tests.helpers import encode
from tests.storage.conftest import JPEG, PHOTO, PNG, Backend, add_concurrently, new_record

CREATED_ON = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def test_add_then_list_get_and_read_images(backend: Backend) -> None:
    store = backend.store
    record = store.add(new_record("alice", "cat"), limit=5)

    assert re.fullmatch(r"[0-9a-f]{24}", record.id)
    assert CREATED_ON.fullmatch(record.created_on)
    assert (record.user_id, record.image_name, record.engine, record.model) == (
        "alice", "cat", "local", "isnet",
    )  # fmt: skip
    assert record.original == ImageInfo(
        "image/jpeg", len(JPEG), *PHOTO.size, hashlib.sha256(JPEG).hexdigest()
    )
    assert record.processed == ImageInfo(
        "image/png", len(PNG), *PHOTO.size, hashlib.sha256(PNG).hexdigest()
    )
    assert not record.legacy
    assert store.list("alice") == [record]
    assert store.get("alice", record.id) == record
    assert store.count("alice") == 1
    assert store.read_image("alice", record.id, "original") == (record.original, JPEG)
    assert store.read_image("alice", record.id, "processed") == (record.processed, PNG)
    assert backend.stored_images() == 2


@pytest.mark.parametrize(("score", "review"), [(0.93, False), (0.41, True), (None, None)])
def test_confidence_is_stored_and_read_back(
    backend: Backend, score: float | None, review: bool | None
) -> None:
    """Each cut-out's confidence and review flag; None for engines that cannot score."""
    store = backend.store
    new = dataclasses.replace(new_record("alice", "cat"), confidence=score, needs_review=review)
    record = store.add(new, limit=5)
    assert (record.confidence, record.needs_review) == (score, review)
    for read in (store.get("alice", record.id), store.list("alice")[0]):
        assert (read.confidence, read.needs_review) == (score, review)
        assert read.needs_review is review  # a bool (or None), not 0/1
    renamed = store.rename("alice", record.id, "renamed")
    assert (renamed.confidence, renamed.needs_review) == (score, review)


def test_rename_changes_only_the_name(backend: Backend) -> None:
    store = backend.store
    record = store.add(new_record("alice", "cat"), limit=5)

    renamed = store.rename("alice", record.id, "a sleepy cat")

    assert renamed.image_name == "a sleepy cat"
    assert renamed == Record(**{**record.__dict__, "image_name": "a sleepy cat"})
    assert store.get("alice", record.id) == renamed
    assert store.read_image("alice", record.id, "processed")[1] == PNG


def test_delete_removes_the_record_and_its_images(backend: Backend) -> None:
    store = backend.store
    keep = store.add(new_record("alice", "keep"), limit=5)
    gone = store.add(new_record("alice", "gone"), limit=5)
    assert backend.stored_images() == 4

    store.delete("alice", gone.id)

    assert store.list("alice") == [keep]
    assert backend.stored_images() == 2
    for call in _calls(gone.id):
        with pytest.raises(NotFound):
            call(store, "alice")
    assert store.read_image("alice", keep.id, "original")[1] == JPEG


def test_list_is_newest_first(backend: Backend) -> None:
    # Added within the same second: insertion order breaks the tie.
    added = [backend.store.add(new_record("alice", f"n{i}"), limit=5) for i in range(4)]

    assert [r.id for r in backend.store.list("alice")] == [r.id for r in reversed(added)]


def test_list_orders_by_created_on_before_insertion(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps = iter(["2024-05-02 10:00:00", "2024-05-03 09:00:00", "2024-05-01 23:59:59"])
    monkeypatch.setattr(backend.module, "now_created_on", lambda: next(stamps))
    a, b, c = (backend.store.add(new_record("alice", n), limit=5) for n in "abc")

    assert [r.image_name for r in backend.store.list("alice")] == ["b", "a", "c"]
    assert [a.created_on, b.created_on, c.created_on] == [
        "2024-05-02 10:00:00", "2024-05-03 09:00:00", "2024-05-01 23:59:59",
    ]  # fmt: skip


def _calls(record_id: str) -> list[Callable[[Any, str], object]]:
    """Every method that takes a record id, bound to *record_id*, called as some user."""
    return [
        lambda store, user: store.get(user, record_id),
        lambda store, user: store.rename(user, record_id, "stolen"),
        lambda store, user: store.read_image(user, record_id, "original"),
        lambda store, user: store.read_image(user, record_id, "processed"),
        lambda store, user: store.save_edit(user, record_id, EDIT),
        lambda store, user: store.save_edit(user, record_id, None),
        lambda store, user: store.save_thumbnail(user, record_id, "original", THUMB),
        lambda store, user: store.read_thumbnail(user, record_id, "processed"),
        lambda store, user: store.delete(user, record_id),
    ]


def test_another_users_record_is_not_found(backend: Backend) -> None:
    store = backend.store
    record = store.add(new_record("alice", "mine"), limit=5)

    for call in _calls(record.id):
        with pytest.raises(NotFound):
            call(store, "mallory")

    assert store.list("mallory") == [] and store.count("mallory") == 0
    assert store.get("alice", record.id) == record  # not renamed, not deleted
    assert backend.stored_images() == 2


@pytest.mark.parametrize(
    "bad_id",
    ["", "nope", "0" * 23, "0" * 25, "g" * 24, "../../../etc/passwd", "0" * 24, "ff" * 12 + "\n"],
    ids=["empty", "word", "short", "long", "not-hex", "path", "well-formed-missing", "newline"],
)
def test_malformed_or_unknown_ids_are_not_found(backend: Backend, bad_id: str) -> None:
    backend.store.add(new_record("alice"), limit=5)

    for call in _calls(bad_id):
        with pytest.raises(NotFound):
            call(backend.store, "alice")
    assert backend.store.count("alice") == 1


def test_concurrent_adds_store_exactly_the_limit(backend: Backend) -> None:
    """20 threads for alice (limit 5) and 3 for bob, all released at once."""
    store = backend.store
    users = ["alice"] * 20 + ["bob"] * 3
    outcomes = add_concurrently(store, users, limit=5)
    stored = [o for o in outcomes if isinstance(o, Record)]
    refused = [o for o in outcomes if not isinstance(o, Record)]
    assert len(outcomes) == len(users)
    assert sorted(r.user_id for r in stored) == ["alice"] * 5 + ["bob"] * 3
    assert all(isinstance(e, LimitReached) for e in refused) and len(refused) == 15, refused
    assert store.count("alice") == 5 and store.count("bob") == 3
    assert backend.stored_images() == 2 * 8


def test_a_lowered_limit_is_respected(backend: Backend) -> None:
    store = backend.store
    first, *_ = (store.add(new_record("alice", f"n{i}"), limit=5) for i in range(3))

    with pytest.raises(LimitReached):
        store.add(new_record("alice"), limit=2)
    with pytest.raises(LimitReached):
        store.add(new_record("alice"), limit=3)
    assert store.count("alice") == 3
    store.delete("alice", first.id)
    store.delete("alice", store.list("alice")[0].id)
    store.add(new_record("alice"), limit=2)
    assert store.count("alice") == 2
    assert backend.stored_images() == 4


def test_limit_reached_keeps_no_images(backend: Backend) -> None:
    backend.store.add(new_record("alice"), limit=1)

    with pytest.raises(LimitReached):
        backend.store.add(new_record("alice"), limit=1)

    assert backend.stored_images() == 2
    assert backend.store.orphans(min_age=0) == []


def test_a_failed_record_insert_removes_the_images(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store
    written_before_failure = []

    def broken_insert(*args: object, **kwargs: object) -> None:
        written_before_failure.append(backend.stored_images())
        raise backend.db_error()

    monkeypatch.setattr(store, "_insert_record", broken_insert)

    with pytest.raises(StorageError, match="Could not store the record"):
        store.add(new_record("alice"), limit=5)

    assert written_before_failure == [2]  # both images were there when the insert failed
    assert store.count("alice") == 0 and store.list("alice") == []
    assert backend.stored_images() == 0
    assert store.orphans(min_age=0) == []


def test_an_insert_that_landed_but_reported_failure_is_undone(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. the connection drops after the server applied the write, before it answered."""
    store = backend.store
    real_insert = store._insert_record

    def lost_reply(*args: Any, **kwargs: Any) -> Any:
        real_insert(*args, **kwargs)
        raise backend.db_error()

    monkeypatch.setattr(store, "_insert_record", lost_reply)

    with pytest.raises(StorageError):
        store.add(new_record("alice"), limit=5)

    assert store.count("alice") == 0
    assert backend.stored_images() == 0


def test_a_failed_image_write_removes_the_first_image(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store
    real_save = store._save_image
    calls: list[str] = []

    def second_write_fails(record_id: Any, kind: Any, *rest: Any) -> Any:
        calls.append(kind)
        if kind == "processed":
            raise backend.write_error()
        return real_save(record_id, kind, *rest)

    monkeypatch.setattr(store, "_save_image", second_write_fails)

    with pytest.raises(StorageError):
        store.add(new_record("alice"), limit=5)

    assert calls == list(KINDS)
    assert store.count("alice") == 0
    assert backend.stored_images() == 0


def test_the_store_works_again_after_a_failure(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store

    def broken_insert(*args: object, **kwargs: object) -> None:
        raise backend.db_error()

    with monkeypatch.context() as patch:
        patch.setattr(store, "_insert_record", broken_insert)
        with pytest.raises(StorageError):
            store.add(new_record("alice"), limit=5)

    record = store.add(new_record("alice"), limit=5)

    assert store.list("alice") == [record]
    assert backend.stored_images() == 2


def test_ping_answers(backend: Backend) -> None:
    backend.store.ping()


def test_close_then_use_again(backend: Backend) -> None:
    record = backend.store.add(new_record("alice"), limit=5)
    backend.store.close()
    backend.store.close()

    assert backend.store.get("alice", record.id) == record


def test_open_store_picks_sqlite_without_a_mongo_uri(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data", mongo_uri=None))

    assert isinstance(store, SQLiteStore) and store.data_dir == tmp_path / "data"
    store.ping()
    assert (tmp_path / "data" / "cutout.sqlite3").is_file()


def test_open_store_picks_mongo_with_a_uri(tmp_path: Path) -> None:
    # Nothing connects until the first call, so an unreachable URI is fine here.
    store = open_store(Settings(data_dir=tmp_path / "data", mongo_uri="mongodb://127.0.0.1:9/x"))

    assert isinstance(store, MongoStore)
    assert not (tmp_path / "data").exists()
    store.close()


# -- touch-up edits and thumbnails ------------------------------------------------------------

_HALF = PHOTO.convert("RGBA")
_HALF.putalpha(128)
EDIT = NewImage(encode(_HALF, "PNG"), "image/png", *PHOTO.size)
THUMB = Thumbnail(encode(PHOTO.resize((32, 24)), "WEBP"), "image/webp", 32, 24, "a" * 64)


def test_an_edit_becomes_the_current_cutout_and_a_reset_goes_back(backend: Backend) -> None:
    store = backend.store
    record = store.add(new_record("alice"), limit=5)
    assert (record.edited, record.revision) == (False, 0)

    edited = store.save_edit("alice", record.id, EDIT)

    assert (edited.edited, edited.revision) == (True, 1)
    assert edited.processed == EDIT.info() and edited.original == record.original
    assert store.read_image("alice", record.id, "processed") == (EDIT.info(), EDIT.data)
    assert store.read_image("alice", record.id, "original")[1] == JPEG
    assert store.list("alice") == [edited] and store.get("alice", record.id) == edited
    assert backend.stored_images() == 3

    again = store.save_edit("alice", record.id, NewImage(PNG, "image/png", *PHOTO.size))
    assert (again.edited, again.revision) == (True, 2)
    assert backend.stored_images() == 3  # only the latest edit is kept

    reset = store.save_edit("alice", record.id, None)

    assert (reset.edited, reset.revision) == (False, 3)
    assert reset == Record(**{**record.__dict__, "revision": 3})
    assert store.read_image("alice", record.id, "processed") == (record.processed, PNG)
    assert backend.stored_images() == 2
    assert store.orphans(min_age=0) == []


def test_rename_keeps_the_edit(backend: Backend) -> None:
    record = backend.store.add(new_record("alice", "cat"), limit=5)
    backend.store.save_edit("alice", record.id, EDIT)

    renamed = backend.store.rename("alice", record.id, "cat, touched up")

    assert (renamed.image_name, renamed.edited, renamed.processed) == (
        "cat, touched up", True, EDIT.info(),
    )  # fmt: skip


def test_thumbnails_are_stored_replaced_and_read(backend: Backend) -> None:
    store = backend.store
    record = store.add(new_record("alice"), limit=5)
    assert store.read_thumbnail("alice", record.id, "original") is None

    store.save_thumbnail("alice", record.id, "original", THUMB)
    newer = Thumbnail(encode(PHOTO.resize((16, 12)), "WEBP"), "image/webp", 16, 12, "b" * 64)
    store.save_thumbnail("alice", record.id, "processed", THUMB)
    store.save_thumbnail("alice", record.id, "processed", newer)

    assert store.read_thumbnail("alice", record.id, "original") == THUMB
    assert store.read_thumbnail("alice", record.id, "processed") == newer
    assert store.get("alice", record.id) == record  # thumbnails do not change the record
    assert backend.stored_images() == 4
    assert store.orphans(min_age=0) == []


def test_delete_removes_edits_and_thumbnails(backend: Backend) -> None:
    store = backend.store
    keep = store.add(new_record("alice", "keep"), limit=5)
    gone = store.add(new_record("alice", "gone"), limit=5)
    for record in (keep, gone):
        store.save_edit("alice", record.id, EDIT)
        for kind in KINDS:
            store.save_thumbnail("alice", record.id, kind, THUMB)
    assert backend.stored_images() == 10

    store.delete("alice", gone.id)

    assert backend.stored_images() == 5
    assert store.orphans(min_age=0) == []
    assert store.read_image("alice", keep.id, "processed")[1] == EDIT.data
    for call in _calls(gone.id):
        with pytest.raises(NotFound):
            call(store, "alice")
    assert backend.stored_images() == 5  # an edit of a deleted record stores nothing


def test_another_users_edit_stores_nothing(backend: Backend) -> None:
    store = backend.store
    record = store.add(new_record("alice"), limit=5)

    with pytest.raises(NotFound):
        store.save_edit("mallory", record.id, EDIT)
    with pytest.raises(NotFound):
        store.save_thumbnail("mallory", record.id, "processed", THUMB)

    assert store.get("alice", record.id) == record
    assert backend.stored_images() == 2
