"""Storage fixtures: one store contract, run against every backend.

Backends, named in each test id:

* ``sqlite``: the real SQLiteStore in ``tmp_path``.
* ``mongomock``: MongoStore on mongomock, an in-process stand-in for a MongoDB server
  (none can be installed here), with GridFS working through mongomock's integration.
* ``mongo_real``: MongoStore on the server at ``CUTOUT_TEST_MONGO_URI``, one throw-away
  database per test, dropped afterwards.

Without ``CUTOUT_TEST_MONGO_URI`` the ``mongo_real`` params are not generated at all rather
than skipped: a skip still shows up among the outcomes and is easy to misread as coverage.
The terminal summary says plainly that they did not run.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import mongomock
import mongomock.gridfs
import pymongo
import pymongo.errors
import pytest
from _pytest.mark.structures import ParameterSet
from _pytest.terminal import TerminalReporter
from pymongo.database import Database

import cutout.storage.mongo
import cutout.storage.sqlite
from cutout.storage import MongoStore, NewImage, NewRecord, Record, SQLiteStore
from tests.helpers import encode, synthetic_photo

# Read at import (collection time): tests/conftest.py removes CUTOUT_* variables during tests.
MONGO_URI = os.environ.get("CUTOUT_TEST_MONGO_URI") or None
RUN_ID = secrets.token_hex(4)
NOT_RUN = "[mongo_real] storage tests were not run: CUTOUT_TEST_MONGO_URI is not set."

# GridFS checks isinstance(db, pymongo.Database); this lets mongomock's classes pass too.
# It patches for the whole session, which is harmless: real pymongo objects still pass.
mongomock.gridfs.enable_gridfs_integration()  # type: ignore[no-untyped-call]

PHOTO = synthetic_photo(64, 48)
JPEG = encode(PHOTO, "JPEG", quality=90)
PNG = encode(PHOTO.convert("RGBA"), "PNG")

Store = SQLiteStore | MongoStore


# mongomock types its client as pymongo's generic one, but it is not subscriptable at runtime.
class MockClient(mongomock.MongoClient):  # type: ignore[type-arg]
    """mongomock's client, plus the one attribute pymongo's GridFS reads from it.

    pymongo >= 4.9 GridFS reads ``client.options.timeout``; mongomock answers any unknown
    attribute with a Database, so without this GridFS fails with a TypeError.
    """

    @property
    def options(self) -> SimpleNamespace:  # type: ignore[override]  # only .timeout is read
        return SimpleNamespace(timeout=None)


def new_record(user_id: str = "alice", name: str = "cat") -> NewRecord:
    """A record with a real JPEG original and a real PNG cut-out."""
    return NewRecord(
        user_id=user_id,
        image_name=name,
        original=NewImage(JPEG, "image/jpeg", *PHOTO.size),
        processed=NewImage(PNG, "image/png", *PHOTO.size),
        engine="local",
        model="isnet",
    )


@dataclass
class Backend:
    """A store plus what tests need to look behind it, without going through it."""

    name: str
    store: Store
    module: ModuleType  # where the store's implementation lives (to patch now_created_on)
    stored_images: Callable[[], int]  # image files / GridFS files that exist right now
    db_error: Callable[[], Exception]  # what the driver raises when the database fails
    write_error: Callable[[], Exception]  # what writing image bytes raises when it fails
    database: Database[dict[str, Any]] | None = None  # Mongo only: the raw database


def backend_params(*names: str) -> list[ParameterSet]:
    """*names* as params; ``mongo_real`` only when there is a server to run it against."""
    params = [pytest.param(n, id=n) for n in names if n != "mongo_real"]
    if "mongo_real" in names and MONGO_URI:
        params.append(pytest.param("mongo_real", id="mongo_real", marks=pytest.mark.mongo_real))
    return params


@pytest.fixture(params=backend_params("sqlite", "mongomock", "mongo_real"))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as built:
        yield built
        built.store.close()


@pytest.fixture(params=backend_params("mongomock", "mongo_real"))
def mongo_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path) as built:
        yield built
        built.store.close()


@contextmanager
def open_backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    if name == "sqlite":
        yield sqlite_backend(tmp_path / "data")
    elif name == "mongomock":
        uri = "mongodb://localhost/cutout_test"
        client = MockClient(uri)
        store = MongoStore(uri, client_factory=lambda *args, **kwargs: client)
        yield mongo_backend_for(name, store, client)
    else:
        assert MONGO_URI is not None
        with real_mongo_backend(MONGO_URI) as built:
            yield built


def sqlite_backend(data_dir: Path) -> Backend:
    images = data_dir / "images"
    return Backend(
        name="sqlite",
        store=SQLiteStore(data_dir),
        module=cutout.storage.sqlite,
        stored_images=lambda: len(list(images.iterdir())) if images.is_dir() else 0,
        db_error=lambda: sqlite3.OperationalError("disk I/O error"),
        write_error=lambda: OSError(errno.ENOSPC, "No space left on device"),
    )


def mongo_backend_for(name: str, store: MongoStore, client: Any) -> Backend:
    """*store*, seen from behind through *client* (on the same database)."""
    database: Database[dict[str, Any]] = client.get_default_database()
    return Backend(
        name=name,
        store=store,
        module=cutout.storage.mongo,
        stored_images=lambda: gridfs_files(database),
        db_error=lambda: pymongo.errors.AutoReconnect("connection reset by peer"),
        write_error=lambda: pymongo.errors.NetworkTimeout("timed out writing a chunk"),
        database=database,
    )


@contextmanager
def real_mongo_backend(uri: str) -> Iterator[Backend]:
    """A store with its own real client on a fresh database, dropped afterwards."""
    name = f"cutout_test_{RUN_ID}_{secrets.token_hex(3)}"
    test_uri = with_database(uri, name)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(test_uri)
    try:
        yield mongo_backend_for("mongo_real", MongoStore(test_uri), client)
    finally:
        client.drop_database(name)
        client.close()


def with_database(uri: str, name: str) -> str:
    """*uri* with its default database replaced by *name* (options kept)."""
    scheme, _, rest = uri.partition("://")
    hosts, _, path = rest.partition("/")
    options = path.partition("?")[2]
    return f"{scheme}://{hosts}/{name}" + (f"?{options}" if options else "")


def gridfs_files(database: Database[dict[str, Any]]) -> int:
    """GridFS files in the ``images`` bucket; also checks no chunk lost its file."""
    files = {f["_id"] for f in database["images.files"].find({}, {"_id": 1})}
    chunk_owners = set(database["images.chunks"].distinct("files_id"))
    assert chunk_owners <= files, f"chunks without a file: {chunk_owners - files}"
    return len(files)


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not MONGO_URI:
        terminalreporter.write_line(NOT_RUN, yellow=True)


def add_concurrently(store: Any, users: list[str], limit: int) -> list[Record | Exception]:
    """Add one record per entry of *users* from that many threads, released together."""
    start = threading.Barrier(len(users))
    outcomes: list[Record | Exception] = []

    def add(user: str) -> None:
        start.wait()
        try:
            outcomes.append(store.add(new_record(user), limit=limit))
        except Exception as exc:  # collected: the caller asserts on them
            outcomes.append(exc)

    threads = [threading.Thread(target=add, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == len(users)
    return outcomes
