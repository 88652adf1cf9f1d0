""":class:`~cutout.storage.jobs.JobStore` in the image store's MongoDB database.

Collections ``jobs`` and ``job_items``; input photos in the GridFS bucket ``job_inputs``
(uploaded from chunks, never whole in memory). Every state change of an item is one
``find_one_and_update`` whose filter names the claim (``attempts``), so it is atomic without
transactions.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from gridfs import GridFSBucket
from gridfs.errors import NoFile
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from cutout.errors import NotFound
from cutout.storage.jobs import (
    INPUTS,
    Counts,
    ItemStatus,
    Job,
    JobItem,
    NewItem,
    NewJob,
    StoredInput,
)
from cutout.storage.mongo import _ID, MongoStore, _storage_errors

Doc = dict[str, Any]
JOBS, ITEMS = "jobs", "job_items"
_STATES = ("queued", "running", "done", "failed", "cancelled")


class MongoJobStore:
    def __init__(self, images: MongoStore) -> None:
        self._images = images
        self._indexed = False

    def _db(self) -> Database[Doc]:
        database = self._images._database()
        if not self._indexed:
            database[JOBS].create_index([("user_id", 1), ("created_at", -1)], name="user")
            database[ITEMS].create_index([("job_id", 1), ("idx", 1)], name="job")
            database[ITEMS].create_index([("status", 1), ("lease_until", 1)], name="due")
            database[ITEMS].create_index(
                [("user_id", 1), ("sha256", 1), ("options_key", 1), ("status", 1)], name="dedup"
            )
            # the reaper's hourly sweep looks orphaned inputs up by name (migration 0007)
            database[ITEMS].create_index([("input", 1)], name="input")
            self._indexed = True
        return database

    def _items(self) -> Collection[Doc]:
        return self._db()[ITEMS]

    def _bucket(self) -> GridFSBucket:
        return GridFSBucket(self._db(), bucket_name=INPUTS)

    # -- input files --------------------------------------------------------------------

    def put_input(self, chunks: Iterable[bytes]) -> StoredInput:
        with _storage_errors("store the photo"):
            file_id = ObjectId()
            digest, size = hashlib.sha256(), 0
            stream = self._bucket().open_upload_stream_with_id(file_id, str(file_id))
            try:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    stream.write(chunk)
                stream.close()
            except BaseException:
                stream.abort()
                raise
            return StoredInput(str(file_id), digest.hexdigest(), size)

    def read_input(self, ref: str) -> bytes:
        with _storage_errors("read the photo"):
            try:
                return self._bucket().open_download_stream(_oid(ref)).read()
            except NoFile:
                raise NotFound("The job's photo is gone.") from None

    def delete_input(self, ref: str) -> None:
        with _storage_errors("delete the photo"), contextlib.suppress(NoFile):
            self._bucket().delete(_oid(ref))

    def purge_finished(self, before: float, limit: int = 1000) -> int:
        with _storage_errors("remove old jobs"):
            jobs = self._db()[JOBS]
            ended = {"status": {"$in": ["done", "cancelled"]}, "finished_at": {"$lt": before}}
            purged = 0
            for job in jobs.find(ended, {"_id": 1}).limit(limit):
                job_id = job["_id"]
                live = {"job_id": job_id, "status": {"$in": ["queued", "running"]}}
                if self._items().find_one(live, {"_id": 1}) is not None:
                    continue
                items = self._items().find({"job_id": job_id, "input": {"$ne": None}})
                inputs = [doc["input"] for doc in items]
                # items first: a crash between the two leaves a job with no item to run,
                # which the next purge finds again
                self._items().delete_many({"job_id": job_id})
                jobs.delete_one({"_id": job_id})
                for ref in inputs:
                    self.delete_input(ref)
                purged += 1
            return purged

    def sweep_inputs(self, older_than: float) -> int:
        with _storage_errors("remove orphaned job photos"):
            since = datetime.fromtimestamp(older_than, UTC)
            files = self._db()[f"{INPUTS}.files"]
            old = [doc["_id"] for doc in files.find({"uploadDate": {"$lt": since}}, {"_id": 1})]
            named: set[str] = set()
            for start in range(0, len(old), 500):
                refs = [str(file_id) for file_id in old[start : start + 500]]
                found = self._items().find({"input": {"$in": refs}}, {"input": 1})
                named.update(doc["input"] for doc in found)
            orphans = [file_id for file_id in old if str(file_id) not in named]
            for file_id in orphans:
                self.delete_input(str(file_id))
            return len(orphans)

    # -- jobs ---------------------------------------------------------------------------

    def add_job(self, job: NewJob, items: builtins.list[NewItem], now: float, due_at: float) -> Job:
        job_id = str(ObjectId())
        with _storage_errors("save the job"):
            docs = [
                {
                    "_id": str(ObjectId()),
                    "job_id": job_id,
                    "user_id": job.user_id,
                    "idx": index,
                    "name": item.name,
                    "status": "queued",
                    "attempts": 0,
                    "lease_until": due_at,
                    "record_id": item.record_id,
                    "input": item.input.ref if item.input else None,
                    "url": item.url,
                    "sha256": item.input.sha256 if item.input else None,
                    "options_key": job.options_key,
                    "charged": False,
                }
                for index, item in enumerate(items)
            ]
            if docs:
                self._items().insert_many(docs)
            # The job last: a job is never seen without all its items.
            self._db()[JOBS].insert_one(
                {
                    "_id": job_id,
                    "user_id": job.user_id,
                    "key_id": job.key_id,
                    "status": "queued",
                    "options": job.options,
                    "options_key": job.options_key,
                    "webhook_url": job.webhook_url,
                    "webhook_secret": job.webhook_secret,
                    "total": len(items),
                    "created_at": now,
                    "started_at": None,
                    "finished_at": None,
                }
            )
        return self.get_job(job.user_id, job_id)

    def get_job(self, user_id: str | None, job_id: str) -> Job:
        query: Doc = {"_id": job_id}
        if user_id is not None:
            query["user_id"] = user_id
        with _storage_errors("read the job"):
            doc = self._db()[JOBS].find_one(query)
            if doc is None:
                raise NotFound("No such job, or it is not this key's user's.")
            return _job(doc, self._counts({"job_id": job_id}))

    def list_jobs(self, user_id: str, limit: int = 100) -> builtins.list[Job]:
        with _storage_errors("list the jobs"):
            docs = self._db()[JOBS].find({"user_id": user_id}).sort("created_at", -1).limit(limit)
            return [_job(doc, self._counts({"job_id": doc["_id"]})) for doc in docs]

    def _counts(self, query: Doc) -> Counts:
        found = {state: 0 for state in _STATES}
        for row in self._items().aggregate(
            [{"$match": query}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        ):
            found[row["_id"]] = row["n"]
        return Counts(**found)

    def list_items(
        self, job_id: str, offset: int = 0, limit: int = 100, status: ItemStatus | None = None
    ) -> builtins.list[JobItem]:
        query: Doc = {"job_id": job_id}
        if status is not None:
            query["status"] = status
        with _storage_errors("list the job's items"):
            docs = self._items().find(query).sort("idx", 1).skip(offset).limit(limit)
            return [_item(doc) for doc in docs]

    def get_item(self, item_id: str) -> JobItem:
        with _storage_errors("read the item"):
            doc = self._items().find_one({"_id": item_id})
        if doc is None:
            raise NotFound("No such item.")
        return _item(doc)

    # -- the item's life ----------------------------------------------------------------

    def claim(self, item_id: str, now: float, lease: float) -> JobItem | None:
        with _storage_errors("claim the item"):
            doc = self._items().find_one_and_update(
                {
                    "_id": item_id,
                    "$or": [
                        {"status": "queued"},
                        {"status": "running", "lease_until": {"$lt": now}},
                    ],
                },
                {
                    "$set": {"status": "running", "lease_until": now + lease},
                    "$inc": {"attempts": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                return None
            if doc.get("started_at") is None:
                self._items().update_one({"_id": item_id}, {"$set": {"started_at": now}})
                doc["started_at"] = now
            self._db()[JOBS].update_one(
                {"_id": doc["job_id"], "status": "queued"},
                {"$set": {"status": "running", "started_at": now}},
            )
            return _item(doc)

    def _claimed(self, item_id: str, attempt: int, change: Doc, extra: Doc | None = None) -> bool:
        query = {"_id": item_id, "attempts": attempt, "status": "running", **(extra or {})}
        with _storage_errors("update the item"):
            return self._items().update_one(query, change).modified_count == 1

    def renew(self, item_id: str, attempt: int, until: float) -> bool:
        return self._claimed(item_id, attempt, {"$set": {"lease_until": until}})

    def set_charged(self, item_id: str, attempt: int, charged: bool) -> bool:
        return self._claimed(
            item_id, attempt, {"$set": {"charged": charged}}, {"charged": not charged}
        )

    def finish(
        self,
        item_id: str,
        attempt: int,
        now: float,
        *,
        image_id: str | None = None,
        error: str | None = None,
        error_code: str | None = None,
    ) -> bool:
        change = {
            "status": "done" if image_id else "failed",
            "image_id": image_id,
            "error": error,
            "error_code": error_code,
            "finished_at": now,
            "lease_until": None,
        }
        return self._claimed(item_id, attempt, {"$set": change})

    def release(self, item_id: str, attempt: int, until: float) -> bool:
        return self._claimed(item_id, attempt, {"$set": {"status": "queued", "lease_until": until}})

    def due(
        self, now: float, grace: float, queued_too: bool, limit: int = 500
    ) -> builtins.list[str]:
        states = ["running", "queued"] if queued_too else ["running"]
        found: builtins.list[str] = []
        with _storage_errors("find items to re-send"):
            while len(found) < limit:
                doc = self._items().find_one_and_update(
                    {"status": {"$in": states}, "lease_until": {"$lt": now}},
                    {"$set": {"status": "queued", "lease_until": now + grace}},
                    projection={"_id": 1},
                )
                if doc is None:
                    break
                found.append(doc["_id"])
        return found

    def complete_job(self, job_id: str, now: float) -> Job | None:
        with _storage_errors("finish the job"):
            left = self._items().count_documents(
                {"job_id": job_id, "status": {"$in": ["queued", "running"]}}
            )
            if left:
                return None
            doc = self._db()[JOBS].find_one_and_update(
                {"_id": job_id, "status": {"$in": ["queued", "running"]}},
                {"$set": {"status": "done", "finished_at": now}},
                return_document=ReturnDocument.AFTER,
            )
            return None if doc is None else _job(doc, self._counts({"job_id": job_id}))

    def cancel_job(self, user_id: str, job_id: str, now: float) -> Job:
        with _storage_errors("cancel the job"):
            if self._db()[JOBS].find_one({"_id": job_id, "user_id": user_id}) is None:
                raise NotFound("No such job, or it is not this key's user's.")
            queued = [d["_id"] for d in self._items().find({"job_id": job_id, "status": "queued"})]
            self._items().update_many(
                {"_id": {"$in": queued}, "status": "queued"},
                {"$set": {"status": "cancelled", "finished_at": now, "lease_until": None}},
            )
            self._db()[JOBS].update_one(
                {"_id": job_id, "status": {"$in": ["queued", "running"]}},
                {"$set": {"status": "cancelled", "finished_at": now}},
            )
            for doc in self._items().find({"_id": {"$in": queued}, "status": "cancelled"}):
                if doc.get("input"):
                    self.delete_input(doc["input"])
        return self.get_job(user_id, job_id)

    def find_done(self, user_id: str, sha256: str, options_key: str) -> str | None:
        with _storage_errors("look for an earlier result"):
            doc = self._items().find_one(
                {
                    "user_id": user_id,
                    "sha256": sha256,
                    "options_key": options_key,
                    "status": "done",
                },
                sort=[("finished_at", -1)],
            )
        return None if doc is None else str(doc["image_id"])

    def counts_by_state(self) -> Counts:
        with _storage_errors("count the items"):
            return self._counts({})


def _oid(ref: str) -> ObjectId:
    if not _ID.fullmatch(ref):
        raise NotFound("No such photo.")
    return ObjectId(ref)


def _job(doc: Doc, counts: Counts) -> Job:
    return Job(
        id=doc["_id"],
        user_id=doc["user_id"],
        key_id=doc.get("key_id"),
        status=doc["status"],
        options=doc.get("options") or {},
        options_key=doc["options_key"],
        webhook_url=doc.get("webhook_url"),
        webhook_secret=doc.get("webhook_secret"),
        total=doc["total"],
        created_at=doc["created_at"],
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        counts=counts,
    )


def _item(doc: Doc) -> JobItem:
    return JobItem(
        id=doc["_id"],
        job_id=doc["job_id"],
        user_id=doc["user_id"],
        index=doc["idx"],
        name=doc["name"],
        status=doc["status"],
        attempts=doc["attempts"],
        lease_until=doc.get("lease_until"),
        record_id=doc["record_id"],
        image_id=doc.get("image_id"),
        error=doc.get("error"),
        error_code=doc.get("error_code"),
        input_ref=doc.get("input"),
        url=doc.get("url"),
        sha256=doc.get("sha256"),
        options_key=doc["options_key"],
        charged=bool(doc.get("charged")),
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
    )
