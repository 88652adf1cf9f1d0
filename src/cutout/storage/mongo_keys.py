""":class:`~cutout.storage.keys.KeyStore` in the image store's MongoDB database.

Collections (indexes made once per process, on first use, like the image store's)::

    api_keys      {_id: "<24 hex>", user_id, name, prefix, secret_hash (unique), created_on,
                   last_used_on, credits, credits_left, credits_used, revoked_on}
    idempotency   {_id: "<user_id>\\n<key>", fingerprint, created (a date: TTL index), status, body}
    improvements  {_id, key_id, user_id, created_on, image_filename, tag, media_type,
                   size_bytes, file_id}  + the GridFS bucket ``improvements``
    improvement_usage  {_id: "key:<id>" or "*", bytes}: the quota's counters

Charging is one ``find_one_and_update`` whose filter demands ``credits_left >= cost``, so two
replicas charging the last credit at once cannot both succeed.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from gridfs import GridFSBucket
from gridfs.errors import NoFile
from pymongo import DESCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cutout.errors import InsufficientCredits, NotFound, QuotaExceeded
from cutout.storage.base import now_created_on
from cutout.storage.keys import (
    IDEMPOTENCY_TTL,
    ApiKey,
    Improvement,
    ImprovementInfo,
    NewKey,
    Quota,
    StoredResponse,
)
from cutout.storage.mongo import MongoStore, _storage_errors
from cutout.storage.sqlite_keys import EPSILON, _replay

Doc = dict[str, Any]
KEYS, IDEMPOTENCY, IMPROVEMENTS = "api_keys", "idempotency", "improvements"
#: Bytes kept for the Improvement Program: {_id: "key:<id>" or "*", bytes}.
USAGE, ALL = "improvement_usage", "*"
_PROJECTION = {"secret_hash": 0, "credits_left": 0, "created_ns": 0}
#: Charge tokens (job items) remembered per key, newest last.
TOKENS_KEPT = 1000


class MongoKeyStore:
    def __init__(self, images: MongoStore) -> None:
        self._images = images
        self._lock = threading.Lock()
        self._ready_db: Database[Doc] | None = None

    def add_key(self, key: NewKey) -> ApiKey:
        doc: Doc = {
            "_id": secrets.token_hex(12),
            "user_id": key.user_id,
            "name": key.name,
            "prefix": key.prefix,
            "secret_hash": key.secret_hash,
            "created_on": now_created_on(),
            "last_used_on": None,
            "credits": key.credits,
            "credits_left": key.credits,
            "credits_used": 0.0,
            "revoked_on": None,
            "created_ns": time.time_ns(),  # "newest first" within one second too
        }
        with _storage_errors("save the API key"):
            self._db()[KEYS].insert_one(doc)
        return _key(doc)

    def find_key(self, secret_hash: str) -> ApiKey | None:
        with _storage_errors("check the API key"):
            doc = self._db()[KEYS].find_one({"secret_hash": secret_hash}, _PROJECTION)
        return _key(doc) if doc else None

    def list_keys(self, user_id: str | None = None) -> builtins.list[ApiKey]:
        query = {} if user_id is None else {"user_id": user_id}
        with _storage_errors("list the API keys"):
            cursor = self._db()[KEYS].find(query, _PROJECTION)
            docs = list(cursor.sort([("created_on", DESCENDING), ("created_ns", DESCENDING)]))
        return [_key(doc) for doc in docs]

    def get_key(self, key_id: str) -> ApiKey:
        with _storage_errors("read the API key"):
            doc = self._db()[KEYS].find_one({"_id": key_id}, _PROJECTION)
        return _key(_found(doc))

    def revoke_key(self, key_id: str, user_id: str | None = None) -> ApiKey:
        query: Doc = {"_id": key_id}
        if user_id is not None:
            query["user_id"] = user_id
        keys = self._db()[KEYS]
        with _storage_errors("revoke the API key"):
            keys.update_one(
                {**query, "revoked_on": None}, {"$set": {"revoked_on": now_created_on()}}
            )
            doc = keys.find_one(query, _PROJECTION)
        return _key(_found(doc))

    def touch_key(self, key_id: str, when: str) -> None:
        with _storage_errors("record the API key's use"):
            self._db()[KEYS].update_one({"_id": key_id}, {"$set": {"last_used_on": when}})

    def charge_key(self, key_id: str, cost: float, token: str | None = None) -> ApiKey:
        keys = self._db()[KEYS]
        live: dict[str, Any] = {"_id": key_id, "revoked_on": None}
        tokens: dict[str, Any] = {}
        if token is not None:
            # The token goes into the key's own document, in the same atomic update as the
            # usage: a charge under a token already there (a refund of one that is not) is a
            # no-op. The last TOKENS_KEPT tokens are kept: far more than items in flight.
            if cost >= 0:
                live["charge_tokens"] = {"$ne": token}
                tokens = {"$push": {"charge_tokens": {"$each": [token], "$slice": -TOKENS_KEPT}}}
            else:
                live["charge_tokens"] = token
                tokens = {"$pull": {"charge_tokens": token}}
        with _storage_errors("charge the API key"):
            # Two filters, because $inc on a null (unlimited) credits_left is an error.
            doc = keys.find_one_and_update(
                {**live, "credits": {"$ne": None}, "credits_left": {"$gte": cost - EPSILON}},
                {"$inc": {"credits_used": cost, "credits_left": -cost}, **tokens},
                projection=_PROJECTION,
                return_document=ReturnDocument.AFTER,
            ) or keys.find_one_and_update(
                {**live, "credits": None},
                {"$inc": {"credits_used": cost}, **tokens},
                projection=_PROJECTION,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None and token is not None:
                done = keys.find_one({"_id": key_id, "revoked_on": None}, _PROJECTION)
                charged = done is not None and token in (done.get("charge_tokens") or [])
                if done is not None and charged == (cost >= 0):
                    return _key(done)  # charged (or given back) already
            exists = doc is not None or keys.find_one(live, {"_id": 1}) is not None
        if doc is not None:
            return _key(doc)
        if exists:
            raise InsufficientCredits("This API key has no credits left for this image.")
        raise NotFound("No such API key.")

    def begin_idempotent(
        self, user_id: str, key: str, fingerprint: str, now: float
    ) -> StoredResponse | None:
        records = self._db()[IDEMPOTENCY]
        doc_id = f"{user_id}\n{key}"
        created = datetime.fromtimestamp(now, UTC)
        with _storage_errors("check the Idempotency-Key"):
            # The TTL monitor runs once a minute; do not replay anything older than the TTL.
            records.delete_one({"_id": doc_id, "created": {"$lt": _expired(now)}})
            try:
                records.insert_one({"_id": doc_id, "fingerprint": fingerprint, "created": created})
                return None
            except DuplicateKeyError:
                doc = _found(records.find_one({"_id": doc_id}))
        return _replay(doc["fingerprint"], fingerprint, doc.get("status"), doc.get("body"))

    def finish_idempotent(self, user_id: str, key: str, response: StoredResponse) -> None:
        with _storage_errors("store the answer for the Idempotency-Key"):
            self._db()[IDEMPOTENCY].update_one(
                {"_id": f"{user_id}\n{key}"},
                {"$set": {"status": response.status, "body": response.body}},
            )

    def abandon_idempotent(self, user_id: str, key: str) -> None:
        with _storage_errors("release the Idempotency-Key"):
            self._db()[IDEMPOTENCY].delete_one({"_id": f"{user_id}\n{key}", "status": None})

    def add_improvement(self, item: Improvement, quota: Quota) -> str:
        """The quota is held by counters ($inc with a filter that demands room, as for credits),
        taken before the bytes are written and given back if anything after fails."""
        improvement_id = secrets.token_hex(12)
        database = self._db()
        size = len(item.data)
        with _storage_errors("keep the submitted image"):
            taken = self._take_quota(database, item.key_id, size, quota)
            try:
                bucket = GridFSBucket(database, bucket_name=IMPROVEMENTS)
                file_id = bucket.upload_from_stream(improvement_id, item.data)
                database[IMPROVEMENTS].insert_one(
                    {
                        "_id": improvement_id,
                        "key_id": item.key_id,
                        "user_id": item.user_id,
                        "created_on": now_created_on(),
                        "image_filename": item.image_filename,
                        "tag": item.tag,
                        "media_type": item.media_type,
                        "size_bytes": size,
                        "file_id": file_id,
                    }
                )
            except BaseException:
                for counter in taken:
                    database[USAGE].update_one({"_id": counter}, {"$inc": {"bytes": -size}})
                raise
        return improvement_id

    def _take_quota(
        self, database: Database[Doc], key_id: str, size: int, quota: Quota
    ) -> list[str]:
        """Reserve *size* bytes on the key's counter and the server's, or neither."""
        taken: list[str] = []
        for counter, limit, scope in (
            (f"key:{key_id}", quota.per_key, "this key"),
            (ALL, quota.total, "this server"),
        ):
            usage = database[USAGE]
            usage.update_one({"_id": counter}, {"$setOnInsert": {"bytes": 0}}, upsert=True)
            if (
                usage.find_one_and_update(
                    {"_id": counter, "bytes": {"$lte": limit - size}}, {"$inc": {"bytes": size}}
                )
                is None
            ):
                for done in taken:
                    usage.update_one({"_id": done}, {"$inc": {"bytes": -size}})
                raise QuotaExceeded(
                    f"The images kept for the Improvement Program by {scope} have reached "
                    f"their quota ({limit / 2**20:g} MB): nothing more is kept until the "
                    "operator purges some (`cutout improvements purge`)."
                )
            taken.append(counter)
        return taken

    def list_improvements(self, key_id: str | None = None) -> builtins.list[ImprovementInfo]:
        query = {"key_id": key_id} if key_id else {}
        with _storage_errors("list the submitted images"):
            docs = (
                self._db()[IMPROVEMENTS]
                .find(query)
                .sort([("created_on", DESCENDING), ("_id", DESCENDING)])
            )
            return [_improvement(doc) for doc in docs]

    def read_improvement(self, improvement_id: str) -> tuple[ImprovementInfo, bytes]:
        database = self._db()
        with _storage_errors("read the submitted image"):
            doc = database[IMPROVEMENTS].find_one({"_id": improvement_id})
            if doc is None:
                raise NotFound("No such submitted image.")
            bucket = GridFSBucket(database, bucket_name=IMPROVEMENTS)
            return _improvement(doc), bucket.open_download_stream(doc["file_id"]).read()

    def purge_improvements(
        self, key_id: str | None = None, before: str | None = None
    ) -> tuple[int, int]:
        query: Doc = {}
        if key_id:
            query["key_id"] = key_id
        if before:
            query["created_on"] = {"$lt": before}
        database = self._db()
        bucket = GridFSBucket(database, bucket_name=IMPROVEMENTS)
        removed, freed = 0, 0
        with _storage_errors("delete submitted images"):
            for doc in database[IMPROVEMENTS].find(query):
                if database[IMPROVEMENTS].delete_one({"_id": doc["_id"]}).deleted_count:
                    with contextlib.suppress(NoFile):
                        bucket.delete(doc["file_id"])
                    for counter in (f"key:{doc['key_id']}", ALL):
                        database[USAGE].update_one(
                            {"_id": counter}, {"$inc": {"bytes": -doc["size_bytes"]}}
                        )
                    removed, freed = removed + 1, freed + int(doc["size_bytes"])
        return removed, freed

    def count_improvements(self, key_id: str) -> int:
        with _storage_errors("count the submitted images"):
            return self._db()[IMPROVEMENTS].count_documents({"key_id": key_id})

    def _db(self) -> Database[Doc]:
        """The image store's database, with this store's indexes made once per client."""
        database = self._images._database()
        if self._ready_db is not database:
            with self._lock, _storage_errors("prepare the API collections"):
                _create_indexes(database)
                self._ready_db = database
        return database


def _create_indexes(database: Database[Doc]) -> None:
    keys: Collection[Doc] = database[KEYS]
    keys.create_index("secret_hash", name="secret_hash", unique=True)
    keys.create_index([("user_id", 1), ("created_on", -1)], name="user_created")
    database[IDEMPOTENCY].create_index(
        "created", name="expire", expireAfterSeconds=int(IDEMPOTENCY_TTL)
    )
    database[IMPROVEMENTS].create_index("key_id", name="key")


def _improvement(doc: Doc) -> ImprovementInfo:
    return ImprovementInfo(
        id=doc["_id"],
        key_id=doc["key_id"],
        user_id=doc["user_id"],
        created_on=doc["created_on"],
        image_filename=doc.get("image_filename"),
        tag=doc.get("tag"),
        media_type=doc["media_type"],
        size_bytes=int(doc["size_bytes"]),
    )


def _expired(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC) - timedelta(seconds=IDEMPOTENCY_TTL)


def _found(doc: Doc | None) -> Doc:
    if doc is None:
        raise NotFound("No such API key.")
    return doc


def _key(doc: Doc) -> ApiKey:
    return ApiKey(
        id=doc["_id"],
        user_id=doc["user_id"],
        name=doc["name"],
        prefix=doc["prefix"],
        created_on=doc["created_on"],
        last_used_on=doc.get("last_used_on"),
        credits=doc.get("credits"),
        credits_used=float(doc.get("credits_used", 0.0)),
        revoked_on=doc.get("revoked_on"),
    )
