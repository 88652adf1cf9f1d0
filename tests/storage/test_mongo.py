"""MongoStore details: GridFS, the seed's documents, slots, the client's lifecycle, failures.

Tests taking ``mongo_backend`` run on [mongomock] and, when configured, [mongo_real].
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo.errors
import pytest
from bson import ObjectId
from gridfs import GridFSBucket

import cutout.storage.mongo
from cutout.errors import LimitReached, NotFound, StorageError
from cutout.storage import ImageInfo, MongoStore, Record
from tests.helpers import free_port
from tests.storage.conftest import (
    JPEG,
    PHOTO,
    PNG,
    Backend,
    MockClient,
    add_concurrently,
    new_record,
)

Doc = dict[str, Any]


def _raw(backend: Backend) -> Any:
    assert backend.database is not None
    return backend.database


def _store(backend: Backend) -> MongoStore:
    assert isinstance(backend.store, MongoStore)
    return backend.store


# -- what our documents look like ----------------------------------------------------------


def test_records_point_to_gridfs_and_hold_no_base64(mongo_backend: Backend) -> None:
    record = mongo_backend.store.add(new_record("alice"), limit=5)

    doc = _raw(mongo_backend)["images"].find_one({"_id": ObjectId(record.id)})
    assert not [key for key in doc if "base64" in key]
    assert (doc["user_id"], doc["image_name"], doc["created_on"]) == (
        "alice", "cat", record.created_on,
    )  # fmt: skip
    assert (doc["slot"], doc["slot_key"]) == (0, "alice#0")
    files = GridFSBucket(_raw(mongo_backend), bucket_name="images")
    for kind, data in (("original", JPEG), ("processed", PNG)):
        assert files.open_download_stream(doc[kind]["file_id"]).read() == data
        meta = _raw(mongo_backend)["images.files"].find_one({"_id": doc[kind]["file_id"]})
        assert meta["metadata"] == {"record_id": doc["_id"], "user_id": "alice", "kind": kind}


def test_indexes_are_created_on_first_use(mongo_backend: Backend) -> None:
    mongo_backend.store.count("alice")

    indexes = _raw(mongo_backend)["images"].index_information()
    assert indexes["user_created"]["key"] == [("user_id", 1), ("created_on", -1)]
    assert indexes["user_slot"]["key"] == [("slot_key", 1)]
    assert indexes["user_slot"]["unique"] and indexes["user_slot"]["sparse"]


# -- the seed's documents ------------------------------------------------------------------


def _seed_doc(user_id: str, name: str, created_on: str, **override: str) -> Doc:
    """A document exactly as the seed's app wrote it."""
    doc = {
        "user_id": user_id,
        "image_name": name,
        "original_image_base64": base64.b64encode(JPEG).decode(),
        "processed_image_base64": base64.b64encode(PNG).decode(),
        "created_on": created_on,
    }
    return doc | override


def _insert_seed_docs(backend: Backend) -> tuple[str, str]:
    """Two of alice's seed documents and one of bob's, before the store first runs."""
    insert = _raw(backend)["images"].insert_one
    older = insert(_seed_doc("alice", "old", "2023-11-20 10:00:00")).inserted_id
    newer = insert(_seed_doc("alice", "newer", "2023-11-21 09:30:00")).inserted_id
    insert(_seed_doc("bob", "bobs", "2023-11-22 08:00:00"))
    return str(older), str(newer)


def test_seed_documents_are_listed_without_their_base64(
    mongo_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    older, newer = _insert_seed_docs(mongo_backend)
    mongo_backend.store.count("alice")  # first use: indexes, sweep
    projections = _spy_on_find(mongo_backend, monkeypatch)

    records = mongo_backend.store.list("alice")

    assert [(r.id, r.image_name, r.created_on) for r in records] == [
        (newer, "newer", "2023-11-21 09:30:00"), (older, "old", "2023-11-20 10:00:00"),
    ]  # fmt: skip
    assert all(r.legacy and r.original is None and r.processed is None for r in records)
    assert {(r.engine, r.model) for r in records} == {("objectcut", "objectcut")}
    assert projections, "list() did not query"
    for projection in projections:
        assert not _loads(projection, "original_image_base64")
        assert not _loads(projection, "processed_image_base64")


def _loads(projection: Doc | None, field: str) -> bool:
    """Whether a find() with *projection* returns *field*."""
    if not projection:
        return True
    if any(projection.values()):  # an inclusion projection names what it returns
        return bool(projection.get(field))
    return field not in projection


def _spy_on_find(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> list[Doc | None]:
    """Record the projection of every find() on the records collection's class."""
    cls = type(_raw(backend)["images"])
    real_find: Callable[..., Any] = cls.find
    seen: list[Doc | None] = []

    def find(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == "images":
            seen.append(args[1] if len(args) > 1 else kwargs.get("projection"))
        return real_find(self, *args, **kwargs)

    monkeypatch.setattr(cls, "find", find)
    return seen


def test_seed_documents_show_their_images(mongo_backend: Backend) -> None:
    older, _ = _insert_seed_docs(mongo_backend)
    store = mongo_backend.store

    record = store.get("alice", older)
    original = store.read_image("alice", older, "original")
    processed = store.read_image("alice", older, "processed")

    assert record.legacy and record.image_name == "old"
    assert original == (
        ImageInfo("image/jpeg", len(JPEG), *PHOTO.size, hashlib.sha256(JPEG).hexdigest()),
        JPEG,
    )
    assert processed == (
        ImageInfo("image/png", len(PNG), *PHOTO.size, hashlib.sha256(PNG).hexdigest()),
        PNG,
    )


def test_seed_documents_rename_and_delete(mongo_backend: Backend) -> None:
    older, newer = _insert_seed_docs(mongo_backend)
    store, raw = mongo_backend.store, _raw(mongo_backend)["images"]

    renamed = store.rename("alice", older, "renamed")
    store.delete("alice", newer)

    assert renamed.image_name == "renamed" and renamed.legacy
    doc = raw.find_one({"_id": ObjectId(older)})
    assert doc["image_name"] == "renamed"
    assert base64.b64decode(doc["original_image_base64"]) == JPEG  # untouched
    assert raw.find_one({"_id": ObjectId(newer)}) is None
    assert [r.id for r in store.list("alice")] == [older]
    assert store.count("bob") == 1


def test_seed_documents_belong_to_their_user_only(mongo_backend: Backend) -> None:
    older, _ = _insert_seed_docs(mongo_backend)
    store = mongo_backend.store

    with pytest.raises(NotFound):
        store.get("bob", older)
    with pytest.raises(NotFound):
        store.read_image("bob", older, "original")
    with pytest.raises(NotFound):
        store.rename("bob", older, "mine now")
    with pytest.raises(NotFound):
        store.delete("bob", older)
    assert store.get("alice", older).image_name == "old"


def test_seed_documents_count_toward_the_limit(mongo_backend: Backend) -> None:
    _insert_seed_docs(mongo_backend)
    store = mongo_backend.store

    assert store.count("alice") == 2
    store.add(new_record("alice"), limit=3)
    with pytest.raises(LimitReached):
        store.add(new_record("alice"), limit=3)
    assert store.count("alice") == 3


def test_seed_documents_count_toward_the_limit_under_concurrency(
    mongo_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert_seed_docs(mongo_backend)
    _widen_the_race(monkeypatch)

    outcomes = add_concurrently(mongo_backend.store, ["alice"] * 10, limit=5)

    assert sum(isinstance(o, Record) for o in outcomes) == 3
    assert mongo_backend.store.count("alice") == 5


def test_a_seed_image_with_a_data_url_prefix_is_read(mongo_backend: Backend) -> None:
    prefixed = "data:image/png;base64," + base64.b64encode(PNG).decode()
    doc = _seed_doc("alice", "x", "2023-11-20 10:00:00", processed_image_base64=prefixed)
    record_id = str(_raw(mongo_backend)["images"].insert_one(doc).inserted_id)

    assert mongo_backend.store.read_image("alice", record_id, "processed")[1] == PNG


def test_an_unreadable_seed_image_is_a_storage_error(mongo_backend: Backend) -> None:
    doc = _seed_doc("alice", "x", "2023-11-20 10:00:00", original_image_base64="bm90IGFuIGltYWdl")
    record_id = str(_raw(mongo_backend)["images"].insert_one(doc).inserted_id)

    with pytest.raises(StorageError, match="cannot be decoded"):
        mongo_backend.store.read_image("alice", record_id, "original")
    assert mongo_backend.store.read_image("alice", record_id, "processed")[1] == PNG


# -- the slot race, forced open --------------------------------------------------------------


def _widen_the_race(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every add pause between choosing a slot and inserting; return the choices."""
    real = cutout.storage.mongo._free_slot
    chosen: list[int] = []

    def slow_free_slot(*args: Any) -> int:
        slot = real(*args)
        chosen.append(slot)
        time.sleep(0.02)  # long enough for the other threads to choose the same slot
        return slot

    monkeypatch.setattr(cutout.storage.mongo, "_free_slot", slow_free_slot)
    return chosen


def test_racing_adds_retry_when_a_slot_was_taken(
    mongo_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _widen_the_race(monkeypatch)

    outcomes = add_concurrently(mongo_backend.store, ["alice"] * 12, limit=5)

    assert sum(isinstance(o, Record) for o in outcomes) == 5
    assert all(isinstance(o, Record | LimitReached) for o in outcomes), outcomes
    assert len(chosen) > 12, "no add ever retried: the race was not exercised"
    slots = sorted(d["slot"] for d in _raw(mongo_backend)["images"].find({"user_id": "alice"}))
    assert slots == [0, 1, 2, 3, 4]
    assert mongo_backend.stored_images() == 10


def test_a_lowered_limit_holds_under_concurrency(
    mongo_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records in slots 7 and 8 (added under limit 10), then racing adds under limit 5."""
    store = mongo_backend.store
    added = [store.add(new_record("alice"), limit=10) for _ in range(9)]
    for record in added[:7]:
        store.delete("alice", record.id)
    _widen_the_race(monkeypatch)

    outcomes = add_concurrently(store, ["alice"] * 8, limit=5)

    assert all(isinstance(o, Record | LimitReached) for o in outcomes), outcomes
    assert store.count("alice") <= 5
    assert mongo_backend.stored_images() == 2 * store.count("alice")


# -- orphans ---------------------------------------------------------------------------------


def _upload_orphan(backend: Backend, age: timedelta = timedelta(0)) -> ObjectId:
    """A GridFS file tagged with a record that never got inserted (a crash mid-add)."""
    files = GridFSBucket(_raw(backend), bucket_name="images")
    file_id = files.upload_from_stream("x.original", b"orphan", metadata={"record_id": ObjectId()})
    uploaded = datetime.now(UTC).replace(tzinfo=None) - age
    _raw(backend)["images.files"].update_one({"_id": file_id}, {"$set": {"uploadDate": uploaded}})
    return file_id


def test_orphans_are_found_and_swept(mongo_backend: Backend) -> None:
    store = _store(mongo_backend)
    store.add(new_record("alice"), limit=5)
    orphan = _upload_orphan(mongo_backend)

    assert store.orphans(min_age=0) == [orphan]
    assert store.orphans() == []  # too young: could be an add in progress
    assert store.sweep(min_age=0) == 1
    assert mongo_backend.stored_images() == 2


def test_a_superseded_edit_that_could_not_be_deleted_is_swept(
    mongo_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its record lives, but no longer names it: the sweep takes it, and nothing else."""
    import cutout.storage.mongo
    from tests.storage.test_contract import EDIT

    store = _store(mongo_backend)
    record = store.add(new_record("alice"), limit=5)
    store.save_edit("alice", record.id, EDIT)
    first = _raw(mongo_backend)["images"].find_one()["edit"]["file_id"]
    with monkeypatch.context() as patch:
        patch.setattr(cutout.storage.mongo, "_delete_files", lambda bucket, ids: None)
        store.save_edit("alice", record.id, EDIT)

    assert store.orphans(min_age=0) == [first]
    assert store.sweep(min_age=0) == 1
    assert store.read_image("alice", record.id, "processed")[1] == EDIT.data
    assert mongo_backend.stored_images() == 3


def test_old_orphans_are_swept_on_first_use(mongo_backend: Backend) -> None:
    _upload_orphan(mongo_backend, age=timedelta(hours=2))
    fresh = _upload_orphan(mongo_backend)

    mongo_backend.store.count("alice")

    ids = [f["_id"] for f in _raw(mongo_backend)["images.files"].find()]
    assert ids == [fresh]


# -- driver failures -------------------------------------------------------------------------


def test_driver_errors_on_reads_become_storage_errors(
    mongo_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = mongo_backend.store.add(new_record("alice"), limit=5)

    def down(*args: object, **kwargs: object) -> None:
        raise pymongo.errors.AutoReconnect("connection closed")

    monkeypatch.setattr(type(_raw(mongo_backend)["images"]), "find_one", down)

    with pytest.raises(StorageError, match=r"MongoDB failed \(connection closed"):
        mongo_backend.store.get("alice", record.id)


def test_an_unreachable_server_is_a_storage_error() -> None:
    """Real pymongo against a closed port: the refusal is quick, the error is ours."""
    store = MongoStore(f"mongodb://127.0.0.1:{free_port()}/cutout?serverSelectionTimeoutMS=300")
    began = time.monotonic()
    try:
        with pytest.raises(StorageError, match="Could not reach MongoDB"):
            store.ping()
        with pytest.raises(StorageError, match="Could not count the records"):
            store.count("alice")
    finally:
        store.close()
    assert time.monotonic() - began < 2


# -- the client's lifecycle (mongomock only: it counts what the factory is asked for) --------


class CountingFactory:
    def __init__(self) -> None:
        self.calls: list[Doc] = []

    def __call__(self, uri: str, **options: Any) -> Any:
        self.calls.append({"uri": uri, **options})
        return MockClient(uri)


def test_the_client_is_created_lazily_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = CountingFactory()
    store = MongoStore("mongodb://localhost/app", client_factory=factory)
    assert factory.calls == []

    store.count("alice")
    store.list("alice")
    assert factory.calls == [
        {"uri": "mongodb://localhost/app", "connect": False, "serverSelectionTimeoutMS": 5000}
    ]

    monkeypatch.setattr(os, "getpid", lambda: -1)  # as if after a fork
    store.count("alice")
    assert len(factory.calls) == 2


def test_a_timeout_in_the_uri_wins() -> None:
    factory = CountingFactory()
    uri = "mongodb://localhost/app?serverSelectionTimeoutMS=100"
    MongoStore(uri, client_factory=factory).ping()

    assert factory.calls == [{"uri": uri, "connect": False}]


def test_without_a_database_in_the_uri_records_go_to_cutout() -> None:
    client = MockClient("mongodb://localhost")
    store = MongoStore("mongodb://localhost", client_factory=lambda *a, **k: client)

    record = store.add(new_record("alice"), limit=5)

    assert client["cutout"]["images"].find_one({"_id": ObjectId(record.id)}) is not None
