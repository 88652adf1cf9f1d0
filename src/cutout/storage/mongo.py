"""The MongoDB store: records in the ``images`` collection, image bytes in GridFS.

A record document keeps the seed's field names and adds what the seed lacked::

    {_id: ObjectId, user_id, image_name, created_on: "YYYY-MM-DD HH:MM:SS", engine, model,
     confidence: 0.93, needs_review: false,      (optional: absent on older documents)
     slot: 3, slot_key: "<user_id>#3",
     original: {file_id, media_type, size_bytes, width, height, sha256}, processed: {...},
     revision: 2, edit: {file_id, ...},                  # a touched-up cut-out (optional)
     thumbs: {original: {file_id, ..., source_sha256}, processed: {...}}}   # (optional)

``processed`` stays the model's cut-out; ``edit``, when present, is the current one (a reset
removes it). Every GridFS file carries ``metadata.record_id``, so deletes and the sweep find all
of a record's files.

Documents the seed's app wrote (``original_image_base64`` / ``processed_image_base64``, no
``original``/``processed``, no slot) are still listed, shown, renamed, deleted and counted;
their base64 fields are only ever read by :meth:`MongoStore.read_image`.

**The per-user limit without transactions.** Every new record takes a *slot*, an integer in
``[0, limit - seed_docs)``, and a unique index on ``slot_key`` (``"<user_id>#<slot>"``) lets at
most one record hold each. ``add`` reads the user's slots, inserts with a free one, and on a
duplicate-key error (another add took it in between) reads again. So with ``limit`` free slots
at most ``limit`` adds can succeed, however many run at once. Seed documents have no slot but
take room too, so the slot range shrinks by their number (which never grows). The index is
sparse on one string field, so documents without a slot are not indexed at all; a compound
``(user_id, slot)`` index would index them with ``slot: null`` and let two collide.

A lowered limit is checked too: after inserting, ``add`` counts again and backs out if the
user is over it (only possible when older records sit in slots above the new limit).

**All-or-nothing.** Images go to GridFS first, tagged with the id the record will get; then the
record is inserted. If anything fails, the record is deleted (an insert whose reply was lost
may have landed) and then the files.

**Crashed adds, and why the sweep never takes a live add's files.** Several processes, often
on several machines, share the database, so a file lock cannot say whether an add is alive.
Each add takes a *lease* first: a document in ``images_pending`` with its record id, the ids
its GridFS files will have (chosen before uploading, so even the chunks of a file cut short
can be found) and a heartbeat it renews before each step. :meth:`MongoStore.sweep` (once per
process on first use, then periodically: :mod:`cutout.storage.sweeper`) looks at leases whose
heartbeat is older than ``LEASE_SECONDS`` and *fences* each one before deleting anything: it
inserts a tombstone into the records collection under the add's record id. ``_id`` is unique,
so exactly one of two things happens, atomically: the add's record is already there (the add
committed; the files are its own and stay), or the tombstone is, and the add can never insert
its record (it gets a duplicate key, undoes its files and reports a storage error). Only then
are the files deleted. Safety needs no clock: a writer that is merely slow loses its lease and
fails cleanly; the lease length only decides how long a crashed add's files wait. Tombstones
carry no user and are invisible to every query; a TTL index removes them after a week.
Files tagged with a record id that has neither a record nor a lease (a delete cut short, or
a version before leases) are removed once older than ``ORPHAN_AGE``.

**Edits and thumbnails** of a record (the page's studio) are uploaded to GridFS, then the record
is pointed at them and the file it named before is deleted. A process that dies in between
leaves a file tagged with a live record's id that the record does not name; the sweep removes
such files once older than ``ORPHAN_AGE`` (an age guard: these writers take no lease, and an
upload-then-update takes well under a second).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from gridfs import GridFSBucket
from gridfs.errors import NoFile
from PIL import Image, UnidentifiedImageError
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from cutout.errors import LimitReached, NotFound, StorageError
from cutout.faults import NO_FAULTS, Faults
from cutout.storage.base import (
    KINDS,
    ImageInfo,
    Kind,
    NewImage,
    NewRecord,
    Record,
    Thumbnail,
    now_created_on,
)

log = logging.getLogger(__name__)

Doc = dict[str, Any]
ClientFactory = Callable[..., MongoClient[Doc]]

COLLECTION = "images"
BUCKET = "images"
PENDING = "images_pending"
DEFAULT_DATABASE = "cutout"
#: Age before files with neither a record nor a lease are swept (a version before leases may
#: still be writing them during a rolling update).
ORPHAN_AGE = 60.0
#: An add renews its lease before each step; one not renewed for this long is swept.
LEASE_SECONDS = 120.0
TOMBSTONE_DAYS = 7
#: Each retry means another add took the slot we picked, so this is only reached under a
#: pathological storm of concurrent adds for one user.
MAX_ATTEMPTS = 50
#: Seed-era records came from the ObjectCut API, which is what our ``objectcut`` engine calls.
LEGACY_ENGINE = LEGACY_MODEL = "objectcut"
LEGACY_FIELDS = {"original": "original_image_base64", "processed": "processed_image_base64"}
#: Everything a Record needs and nothing heavy: never the seed's base64 images.
RECORD_PROJECTION = {
    "original_image_base64": 0,
    "processed_image_base64": 0,
    "slot_key": 0,
    "thumbs": 0,
}
#: The fields that hold GridFS file ids: what a delete or the sweep must account for.
EDIT, THUMBS = "edit", "thumbs"
FILES_PROJECTION = {f"{field}.file_id": 1 for field in (*KINDS, EDIT)} | {THUMBS: 1}
_ID = re.compile(r"[0-9a-fA-F]{24}")


class MongoStore:
    """:class:`~cutout.storage.base.ImageStore` on MongoDB. Thread-safe and fork-safe.

    The client is created on first use in each process (``connect=False``, and again when
    ``os.getpid()`` changed), never at import or in the gunicorn master, because a MongoClient
    must not cross a fork. *client_factory* builds it (``pymongo.MongoClient`` in production;
    tests pass ``mongomock.MongoClient``). The database is the URI's default, else ``cutout``.
    """

    def __init__(
        self, uri: str, *, client_factory: ClientFactory = MongoClient, faults: Faults = NO_FAULTS
    ) -> None:
        self._uri = uri
        self._client_factory = client_factory
        self._faults = faults
        self._lock = threading.Lock()
        self._client: MongoClient[Doc] | None = None
        self._pid = 0
        self._ready = False  # indexes created and orphans swept, in this process

    # -- the ImageStore protocol -----------------------------------------------------------

    def add(self, record: NewRecord, *, limit: int, record_id: str | None = None) -> Record:
        if record_id is not None:
            existing = self._existing(record.user_id, record_id)
            if existing is not None:
                return existing
        oid = ObjectId(record_id) if record_id else ObjectId()
        try:
            return self._add(record, limit, oid)
        except StorageError:
            # Two adds of one given id at once: the one that lost the insert finds the other's.
            existing = self._existing(record.user_id, record_id) if record_id else None
            if existing is None:
                raise
            return existing

    def _existing(self, user_id: str, record_id: str) -> Record | None:
        with _storage_errors("read the record"):
            doc = self._records().find_one(
                {**_owned(user_id, record_id), "tombstone": {"$exists": False}},
                RECORD_PROJECTION,
            )
        return None if doc is None else _record(doc)

    def _add(self, record: NewRecord, limit: int, record_id: ObjectId) -> Record:
        files = [ObjectId() for _ in KINDS]
        with _storage_errors("store the record"):
            records = self._records()  # the unique slot index must exist before any insert
            self._take_lease(record_id, files)
            try:
                self._faults.reached("add.start")
                for kind, file_id in zip(KINDS, files, strict=True):
                    self._renew_lease(record_id)
                    self._save_image(record_id, kind, record, file_id)
                    self._faults.reached(f"add.after_{kind}")
                self._renew_lease(record_id)
                doc = self._insert_record(record_id, record, files, limit)
                self._faults.reached("add.after_row")
            except _IdTaken:
                _delete_files(self._bucket(), files)  # the record is the other add's: kept
                _release_lease(self._database(), record_id)
                raise
            except BaseException:
                self._discard(records, record_id, files)
                raise
            _release_lease(self._database(), record_id)
        return _record(doc)

    def count(self, user_id: str) -> int:
        with _storage_errors("count the records"):
            return self._records().count_documents({"user_id": user_id})

    def list(self, user_id: str) -> list[Record]:
        with _storage_errors("list the records"):
            cursor = self._records().find({"user_id": user_id}, RECORD_PROJECTION)
            # ObjectIds grow with time within a process: the tie-break for equal seconds.
            return [_record(doc) for doc in cursor.sort([("created_on", -1), ("_id", -1)])]

    def get(self, user_id: str, record_id: str) -> Record:
        query = _owned(user_id, record_id)
        with _storage_errors("read the record"):
            doc = self._records().find_one(query, RECORD_PROJECTION)
        return _record(_found(doc))

    def rename(self, user_id: str, record_id: str, image_name: str) -> Record:
        query = _owned(user_id, record_id)
        with _storage_errors("rename the record"):
            doc = self._records().find_one_and_update(
                query,
                {"$set": {"image_name": image_name}},
                projection=RECORD_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
        return _record(_found(doc))

    def delete(self, user_id: str, record_id: str) -> None:
        """Delete the document, then its GridFS files (leftovers are swept later)."""
        query = _owned(user_id, record_id)
        with _storage_errors("delete the record"):
            doc = _found(self._records().find_one_and_delete(query, projection=FILES_PROJECTION))
            _delete_files(self._bucket(), _referenced_files(doc))

    def read_image(self, user_id: str, record_id: str, kind: Kind) -> tuple[ImageInfo, bytes]:
        query = _owned(user_id, record_id)
        with _storage_errors(f"read the {kind} image"):
            doc, stored = self._current(query, kind)
            if stored is not None:
                try:
                    return _info(stored), self._download(stored)
                except NoFile:
                    if stored is not doc.get(EDIT):
                        raise
                # An edit replaced between the find and the read: the record names the new one.
                doc, stored = self._current(query, kind)
                if stored is not None:
                    return _info(stored), self._download(stored)
        if isinstance(doc.get(LEGACY_FIELDS[kind]), str):
            return _legacy_image(doc[LEGACY_FIELDS[kind]])
        raise StorageError(f"Record {record_id} has no {kind} image stored.")

    def save_edit(self, user_id: str, record_id: str, processed: NewImage | None) -> Record:
        query = _owned(user_id, record_id)
        with _storage_errors("save the edit"):
            self._records()
            if processed is None:
                change: Doc = {"$unset": {EDIT: ""}, "$inc": {"revision": 1}}
                self._replace_subdocument(query, EDIT, change, None)
            else:
                self._save_subdocument(query, EDIT, processed, None, bump=True)
            doc = self._records().find_one(query, RECORD_PROJECTION)
        return _record(_found(doc))

    def save_thumbnail(self, user_id: str, record_id: str, kind: Kind, thumb: Thumbnail) -> None:
        query = _owned(user_id, record_id)
        image = NewImage(thumb.data, thumb.media_type, thumb.width, thumb.height)
        with _storage_errors("save the thumbnail"):
            self._records()
            self._save_subdocument(
                query, f"{THUMBS}.{kind}", image, thumb.source_sha256, bump=False
            )

    def read_thumbnail(self, user_id: str, record_id: str, kind: Kind) -> Thumbnail | None:
        query = _owned(user_id, record_id)
        with _storage_errors("read the thumbnail"):
            doc = _found(self._records().find_one(query, {f"{THUMBS}.{kind}": 1}))
            sub = doc.get(THUMBS, {}).get(kind)
            if not isinstance(sub, dict):
                return None
            try:
                data = self._bucket().open_download_stream(sub["file_id"]).read()
            except NoFile:
                return None  # replaced meanwhile: the caller makes one again
        info = _info(sub)
        return Thumbnail(data, info.media_type, info.width, info.height, sub["source_sha256"])

    def ping(self) -> None:
        with _storage_errors("reach MongoDB"):
            self._database().client.admin.command("ping")

    def close(self) -> None:
        """Close this process's client (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
            self._ready = False
        if client is not None and self._pid == os.getpid():
            client.close()

    # -- recovery --------------------------------------------------------------------------

    def orphans(self, min_age: float = ORPHAN_AGE) -> builtins.list[ObjectId]:
        """GridFS files older than *min_age* seconds with neither a record nor a lease.

        Files of adds whose lease expired are not listed: :meth:`sweep` fences those first.
        """
        with _storage_errors("look for orphaned images"):
            self._records()
            return _orphans(self._database(), min_age)

    def sweep(self, min_age: float = ORPHAN_AGE, lease: float = LEASE_SECONDS) -> int:
        """Delete the files of adds that died and of deletes cut short; return how many.

        Safe to run at any time, from any number of processes: see the module docstring.
        """
        with _storage_errors("remove orphaned images"):
            self._records()
            return _sweep(self._database(), min_age, lease)

    # -- internals (tests patch _save_image and _insert_record to inject failures) ---------

    def _save_image(
        self, record_id: ObjectId, kind: Kind, record: NewRecord, file_id: ObjectId
    ) -> ObjectId:
        image = _image(record, kind)
        metadata = {"record_id": record_id, "user_id": record.user_id, "kind": kind}
        self._bucket().upload_from_stream_with_id(
            file_id, f"{record_id}.{kind}", image.data, metadata=metadata
        )
        return file_id

    def _take_lease(self, record_id: ObjectId, files: builtins.list[ObjectId]) -> None:
        self._database()[PENDING].insert_one(
            {"_id": record_id, "files": files, "heartbeat": _now()}
        )

    def _renew_lease(self, record_id: ObjectId) -> None:
        renewed = self._database()[PENDING].update_one(
            {"_id": record_id}, {"$set": {"heartbeat": _now()}}
        )
        if renewed.matched_count == 0:  # a sweep fenced this add: it may not go on
            raise StorageError(ABANDONED)

    def _current(self, query: Doc, kind: Kind) -> tuple[Doc, Doc | None]:
        """The record and the subdocument of its current *kind* image (None: a seed image)."""
        projection = {kind: 1, LEGACY_FIELDS[kind]: 1, EDIT: 1}
        doc = _found(self._records().find_one(query, projection))
        for field in (EDIT, kind) if kind == "processed" else (kind,):
            if isinstance(doc.get(field), dict):
                return doc, doc[field]
        return doc, None

    def _download(self, sub: Doc) -> bytes:
        data: bytes = self._bucket().open_download_stream(sub["file_id"]).read()
        return data

    def _save_subdocument(
        self, query: Doc, field: str, image: NewImage, source_sha256: str | None, *, bump: bool
    ) -> None:
        """Upload *image*, then point the record's *field* at it (and drop what it named)."""
        metadata = {"record_id": query["_id"], "user_id": query["user_id"], "kind": field}
        file_id = self._bucket().upload_from_stream(
            f"{query['_id']}.{field}", image.data, metadata=metadata
        )
        sub = _subdocument(file_id, image.info())
        if source_sha256 is not None:
            sub["source_sha256"] = source_sha256
        change: Doc = {"$set": {field: sub}}
        if bump:
            change["$inc"] = {"revision": 1}
        self._replace_subdocument(query, field, change, file_id)

    def _replace_subdocument(
        self, query: Doc, field: str, change: Doc, new_file: ObjectId | None
    ) -> None:
        """Apply *change* to the record if it is still there; delete the file *field* named
        before (or, if the record is gone, the new file)."""
        try:
            before = self._records().find_one_and_update(
                query, change, projection={field: 1}, return_document=ReturnDocument.BEFORE
            )
            _found(before)
        except BaseException:
            if new_file is not None:
                _delete_files(self._bucket(), [new_file])
            raise
        old = _lookup(before, field)
        if isinstance(old, dict) and old.get("file_id") != new_file:
            _delete_files(self._bucket(), [old["file_id"]])

    def _insert_record(
        self, record_id: ObjectId, record: NewRecord, files: builtins.list[ObjectId], limit: int
    ) -> Doc:
        """Insert with a free slot, retrying when a concurrent add took the same one."""
        records = self._records()
        for _ in range(MAX_ATTEMPTS):
            slot = _free_slot(records, record.user_id, limit)
            doc = _document(record_id, record, files, slot)
            try:
                records.insert_one(doc)
            except DuplicateKeyError:
                if records.find_one({"_id": record_id, "tombstone": True}, {"_id": 1}):
                    raise StorageError(ABANDONED) from None  # fenced by a sweep
                if records.find_one({"_id": record_id}, {"_id": 1}):
                    raise _IdTaken(ABANDONED) from None  # a given id, added meanwhile
                continue
            _recheck_limit(records, record.user_id, limit)
            return doc
        raise StorageError("Too many uploads at once for this user; please try again.")

    def _discard(
        self, records: Collection[Doc], record_id: ObjectId, files: builtins.list[ObjectId]
    ) -> None:
        """Undo a failed add: the record (an insert that reported failure may have landed),
        then its files. If the record cannot be removed, the files stay: the sweep deletes
        them once the record is really gone, so a record never loses its images.
        """
        try:
            records.delete_one({"_id": record_id, "tombstone": {"$exists": False}})
        except PyMongoError as exc:
            log.warning("Could not undo record %s (the sweep will): %s", record_id, exc)
            return
        _delete_files(self._bucket(), files)
        _release_lease(self._database(), record_id)

    def _database(self) -> Database[Doc]:
        """This process's database handle; a new client after a fork."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # After a fork the parent's client is dropped, not closed: its sockets and
                # threads belong to the parent.
                self._client = self._client_factory(self._uri, **_client_options(self._uri))
                self._pid = os.getpid()
                self._ready = False
            return self._client.get_default_database(default=DEFAULT_DATABASE)

    def _records(self) -> Collection[Doc]:
        """The records collection, with its indexes made (and orphans swept) once."""
        database = self._database()
        if not self._ready:
            with self._lock:
                if not self._ready:
                    _create_indexes(database[COLLECTION])
                    _sweep_at_start(database)
                    self._ready = True
        return database[COLLECTION]

    def _bucket(self) -> GridFSBucket:
        return GridFSBucket(self._database(), bucket_name=BUCKET)


# -- helpers -------------------------------------------------------------------------------


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Turn pymongo errors (connection, timeout, server) into :class:`StorageError`."""
    try:
        yield
    except PyMongoError as exc:
        raise StorageError(f"Could not {action}: MongoDB failed ({_short(exc)}).") from exc


def _short(exc: PyMongoError) -> str:
    """The gist of a pymongo error: server-selection errors append pages of topology."""
    text = str(exc)
    for tail in (" (configured timeouts", ", Timeout:", ", Topology Description:"):
        text = text.split(tail)[0]
    return text[:200]


def _client_options(uri: str) -> dict[str, Any]:
    """``connect=False`` (no threads before a fork) and a short server wait.

    pymongo waits 30 s for a server by default; a web request should fail sooner. A value
    given in the URI wins.
    """
    options: dict[str, Any] = {"connect": False}
    if "serverselectiontimeoutms" not in uri.lower():
        options["serverSelectionTimeoutMS"] = 5000
    return options


ABANDONED = "The upload took too long and was abandoned; please try again."


def _now() -> datetime:
    """Naive UTC, as BSON dates come back (and as GridFS stores uploadDate)."""
    return datetime.now(UTC).replace(tzinfo=None)


class _IdTaken(StorageError):
    """An add with a given record id found that id taken by another add of it."""


def _create_indexes(records: Collection[Doc]) -> None:
    records.create_index([("user_id", 1), ("created_on", -1)], name="user_created")
    records.create_index("slot_key", name="user_slot", unique=True, sparse=True)
    # Only tombstones have swept_on: they go after a week, records never.
    records.create_index(
        "swept_on", name="tombstones", expireAfterSeconds=TOMBSTONE_DAYS * 86400, sparse=True
    )
    records.database[PENDING].create_index("heartbeat", name="heartbeat")


def _release_lease(database: Database[Doc], record_id: ObjectId) -> None:
    """Best effort: a lease left behind belongs to a committed record; the sweep drops it."""
    try:
        database[PENDING].delete_one({"_id": record_id})
    except PyMongoError as exc:
        log.warning("Could not release the lease of %s (the sweep will): %s", record_id, exc)


def _delete_files(bucket: GridFSBucket, file_ids: list[ObjectId]) -> None:
    """Best effort: a file that cannot be deleted now is an orphan for the next sweep."""
    for file_id in file_ids:
        try:
            bucket.delete(file_id)
        except NoFile:
            pass  # already gone (a concurrent sweep, or a retried delete)
        except PyMongoError as exc:
            log.warning("Could not delete GridFS file %s (the next sweep will): %s", file_id, exc)


def _orphans(database: Database[Doc], min_age: float) -> list[ObjectId]:
    """GridFS files older than *min_age* seconds that no record names (tombstones do not count)
    and whose record id has no lease (an add still writing it)."""
    cutoff = _now() - timedelta(seconds=min_age)
    files = list(
        database[f"{BUCKET}.files"].find(
            {"uploadDate": {"$lte": cutoff}, "metadata.record_id": {"$exists": True}},
            {"metadata.record_id": 1},
        )
    )
    wanted = list({f["metadata"]["record_id"] for f in files})
    referenced = {
        file_id
        for doc in database[COLLECTION].find(
            {"_id": {"$in": wanted}, "tombstone": {"$exists": False}}, FILES_PROJECTION
        )
        for file_id in _referenced_files(doc)
    }
    leased = {d["_id"] for d in database[PENDING].find({"_id": {"$in": wanted}}, {"_id": 1})}
    return [
        f["_id"]
        for f in files
        if f["_id"] not in referenced and f["metadata"]["record_id"] not in leased
    ]


def _referenced_files(doc: Doc) -> list[ObjectId]:
    """Every GridFS file a record document names: its images, its edit, its thumbnails."""
    subs = [doc.get(field) for field in (*KINDS, EDIT)]
    thumbs = doc.get(THUMBS)
    if isinstance(thumbs, dict):
        subs += list(thumbs.values())
    return [sub["file_id"] for sub in subs if isinstance(sub, dict) and "file_id" in sub]


def _lookup(doc: Doc | None, dotted: str) -> Any:
    """``doc["a"]["b"]`` for ``"a.b"``, or None where a level is missing."""
    value: Any = doc
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _sweep(database: Database[Doc], min_age: float, lease: float) -> int:
    """Fence and clear expired leases, then remove files with neither record nor lease."""
    bucket = GridFSBucket(database, bucket_name=BUCKET)
    removed = 0
    expired = _now() - timedelta(seconds=lease)
    for pending in list(database[PENDING].find({"heartbeat": {"$lte": expired}})):
        if _fence(database, pending["_id"]):
            _delete_files(bucket, pending["files"])  # chunks too, even without a files doc
            removed += len(pending["files"])
        database[PENDING].delete_one({"_id": pending["_id"]})
    found = _orphans(database, min_age)
    _delete_files(bucket, found)
    return removed + len(found)


def _fence(database: Database[Doc], record_id: ObjectId) -> bool:
    """Make sure the add of *record_id* can never insert its record; True if it has none.

    False means the record exists: the add committed (its lease outlived it), and the files
    are the record's own.
    """
    try:
        database[COLLECTION].insert_one({"_id": record_id, "tombstone": True, "swept_on": _now()})
    except DuplicateKeyError:
        existing = database[COLLECTION].find_one({"_id": record_id}, {"tombstone": 1})
        return existing is None or bool(existing.get("tombstone"))
    return True


def _sweep_at_start(database: Database[Doc]) -> None:
    try:
        removed = _sweep(database, ORPHAN_AGE, LEASE_SECONDS)
    except PyMongoError as exc:  # recovery is best effort; never block start
        log.warning("Could not sweep orphaned GridFS files: %s", exc)
        return
    if removed:
        log.info("Removed %d orphaned GridFS files", removed)


def _free_slot(records: Collection[Doc], user_id: str, limit: int) -> int:
    """The lowest slot no record of *user_id* holds. :raises LimitReached:"""
    docs = list(records.find({"user_id": user_id}, {"slot": 1, "_id": 0}))
    taken = {doc["slot"] for doc in docs if "slot" in doc}
    legacy = len(docs) - len(taken)
    if len(docs) < limit:
        for slot in range(limit - legacy):
            if slot not in taken:
                return slot
    raise LimitReached()


def _recheck_limit(records: Collection[Doc], user_id: str, limit: int) -> None:
    """Refuse a just-inserted record (the caller removes it) if the user is now over *limit*.

    Slots alone keep the count within the limit the slots were taken under. When the limit
    was lowered, older records may hold slots at or above the new limit, and concurrent adds
    could then overshoot; this check closes that gap (it never fires otherwise).
    """
    if records.count_documents({"user_id": user_id}) > limit:
        raise LimitReached()


def _document(record_id: ObjectId, record: NewRecord, files: list[ObjectId], slot: int) -> Doc:
    doc: Doc = {
        "_id": record_id,
        "user_id": record.user_id,
        "image_name": record.image_name,
        "created_on": now_created_on(),
        "engine": record.engine,
        "model": record.model,
        "slot": slot,
        "slot_key": f"{record.user_id}#{slot}",
    }
    if record.confidence is not None:
        doc["confidence"] = record.confidence
        doc["needs_review"] = record.needs_review
    for kind, file_id in zip(KINDS, files, strict=True):
        doc[kind] = _subdocument(file_id, _image(record, kind).info())
    return doc


def _subdocument(file_id: ObjectId, info: ImageInfo) -> Doc:
    return {"file_id": file_id, "media_type": info.media_type, "size_bytes": info.size_bytes,
            "width": info.width, "height": info.height, "sha256": info.sha256}  # fmt: skip


def _owned(user_id: str, record_id: str) -> Doc:
    """The query for *record_id* if it belongs to *user_id*. :raises NotFound: malformed id"""
    if not _ID.fullmatch(record_id):
        raise NotFound("No such record.")
    return {"_id": ObjectId(record_id), "user_id": user_id}


def _found(doc: Doc | None) -> Doc:
    if doc is None:
        raise NotFound("No such record.")
    return doc


def _image(record: NewRecord, kind: Kind) -> NewImage:
    return record.original if kind == "original" else record.processed


def _info(sub: Doc) -> ImageInfo:
    return ImageInfo(
        media_type=sub["media_type"],
        size_bytes=sub["size_bytes"],
        width=sub["width"],
        height=sub["height"],
        sha256=sub["sha256"],
    )


def _record(doc: Doc) -> Record:
    """A Record from a document of ours or of the seed's app (then without image infos);
    ``processed`` is the edit when there is one."""
    images = {k: _info(doc[k]) if isinstance(doc.get(k), dict) else None for k in KINDS}
    edited = isinstance(doc.get(EDIT), dict)
    if edited:
        images["processed"] = _info(doc[EDIT])
    return Record(
        id=str(doc["_id"]),
        user_id=doc["user_id"],
        image_name=doc.get("image_name", ""),
        created_on=doc.get("created_on", ""),
        original=images["original"],
        processed=images["processed"],
        engine=doc.get("engine", LEGACY_ENGINE),
        model=doc.get("model", LEGACY_MODEL),
        confidence=doc.get("confidence"),
        needs_review=doc.get("needs_review"),
        edited=edited,
        revision=int(doc.get("revision", 0)),
    )


def _legacy_image(encoded: str) -> tuple[ImageInfo, bytes]:
    """Decode a seed-era base64 image and describe it (type and size sniffed by Pillow)."""
    _, _, payload = encoded.rpartition(",")  # tolerate a "data:image/png;base64," prefix
    try:
        data = base64.b64decode(payload)
        with Image.open(io.BytesIO(data)) as image:
            media_type = Image.MIME.get(image.format or "", "application/octet-stream")
            width, height = image.size
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise StorageError("An image saved by the previous version cannot be decoded.") from exc
    return NewImage(data, media_type, width, height).info(), data
