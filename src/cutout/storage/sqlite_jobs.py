""":class:`~cutout.storage.jobs.JobStore` in the image store's SQLite file (migration 0006).

Input photos are files under ``job_inputs/`` beside ``images/``. Every state change is one
conditional ``UPDATE``: SQLite's single writer makes each atomic, across processes too.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
from cutout.storage.sqlite import SQLiteStore, _immediate, _storage_errors, files_written_by

_JOB = (
    "id, user_id, key_id, status, options, options_key, webhook_url, webhook_secret, total, "
    "created_at, "
    "started_at, finished_at"
)
_ITEM = (
    "id, job_id, user_id, idx, name, status, attempts, lease_until, record_id, image_id, "
    "error, error_code, input, url, sha256, options_key, charged, started_at, finished_at"
)
_CLAIMED = "id = ? AND attempts = ? AND status = 'running'"


class SQLiteJobStore:
    def __init__(self, images: SQLiteStore) -> None:
        self._images = images
        self.inputs_dir = images.data_dir / INPUTS

    # -- input files --------------------------------------------------------------------

    def put_input(self, chunks: Iterable[bytes]) -> StoredInput:
        with _storage_errors("store the photo"):
            self._images._setup()
            self.inputs_dir.mkdir(mode=0o700, exist_ok=True)
            ref = secrets.token_hex(12)
            path = self.inputs_dir / ref
            digest, size = hashlib.sha256(), 0
            try:
                with open(path, "xb") as out:
                    for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return StoredInput(ref, digest.hexdigest(), size)

    def read_input(self, ref: str) -> bytes:
        with _storage_errors("read the photo"):
            try:
                return self._input_path(ref).read_bytes()
            except FileNotFoundError:
                raise NotFound("The job's photo is gone.") from None

    def delete_input(self, ref: str) -> None:
        with _storage_errors("delete the photo"):
            self._input_path(ref).unlink(missing_ok=True)

    def sweep_inputs(self, older_than: float) -> int:
        with _storage_errors("remove orphaned job photos"):
            written = files_written_by(self.inputs_dir, older_than)
            old = [p.name for p in written if p.name.isalnum()]  # only refs put_input names
            named: set[str] = set()
            with self._images._connection("remove orphaned job photos") as conn:
                for start in range(0, len(old), 500):  # SQLite's limit on parameters
                    batch = old[start : start + 500]
                    marks = ", ".join("?" * len(batch))
                    query = f"SELECT input FROM job_items WHERE input IN ({marks})"
                    named.update(row[0] for row in conn.execute(query, batch))
            orphans = [ref for ref in old if ref not in named]
            for ref in orphans:
                self.delete_input(ref)
            return len(orphans)

    def purge_finished(self, before: float, limit: int = 1000) -> int:
        with self._images._connection("remove old jobs") as conn, _immediate(conn):
            ids = [row[0] for row in conn.execute(
                "SELECT id FROM jobs WHERE status IN ('done', 'cancelled') AND finished_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM job_items WHERE job_id = jobs.id "
                "AND status IN ('queued', 'running')) LIMIT ?", (before, limit))]  # fmt: skip
            inputs: list[str] = []
            for job_id in ids:
                inputs += [row[0] for row in conn.execute(
                    "SELECT input FROM job_items WHERE job_id = ? AND input IS NOT NULL",
                    (job_id,))]  # fmt: skip
                conn.execute("DELETE FROM job_items WHERE job_id = ?", (job_id,))
                conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        for ref in inputs:  # after the commit: a crash here leaves files the sweep removes
            self.delete_input(ref)
        return len(ids)

    def _input_path(self, ref: str) -> Path:
        if not ref.isalnum():
            raise NotFound("No such photo.")
        return self.inputs_dir / ref

    # -- jobs ---------------------------------------------------------------------------

    def add_job(self, job: NewJob, items: builtins.list[NewItem], now: float, due_at: float) -> Job:
        job_id = secrets.token_hex(12)
        with self._images._connection("save the job") as conn, _immediate(conn):
            conn.execute(
                f"INSERT INTO jobs ({_JOB}) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    job_id,
                    job.user_id,
                    job.key_id,
                    json.dumps(job.options, sort_keys=True),
                    job.options_key,
                    job.webhook_url,
                    job.webhook_secret,
                    len(items),
                    now,
                ),
            )
            conn.executemany(
                "INSERT INTO job_items (id, job_id, user_id, idx, name, status, lease_until, "
                "record_id, input, url, sha256, options_key) "
                "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                [
                    (
                        secrets.token_hex(12),
                        job_id,
                        job.user_id,
                        index,
                        item.name,
                        due_at,
                        item.record_id,
                        item.input.ref if item.input else None,
                        item.url,
                        item.input.sha256 if item.input else None,
                        job.options_key,
                    )
                    for index, item in enumerate(items)
                ],
            )
        return self.get_job(job.user_id, job_id)

    def get_job(self, user_id: str | None, job_id: str) -> Job:
        owner, args = (
            ("", (job_id,)) if user_id is None else (" AND user_id = ?", (job_id, user_id))
        )
        with self._images._connection("read the job") as conn:
            row = conn.execute(f"SELECT {_JOB} FROM jobs WHERE id = ?{owner}", args).fetchone()
            if row is None:
                raise NotFound("No such job, or it is not this key's user's.")
            return _job(row, _counts(conn, job_id))

    def list_jobs(self, user_id: str, limit: int = 100) -> builtins.list[Job]:
        with self._images._connection("list the jobs") as conn:
            rows = conn.execute(
                f"SELECT {_JOB} FROM jobs WHERE user_id = ? "
                "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
            return [_job(row, _counts(conn, row["id"])) for row in rows]

    def list_items(
        self, job_id: str, offset: int = 0, limit: int = 100, status: ItemStatus | None = None
    ) -> builtins.list[JobItem]:
        where, args = "job_id = ?", [job_id]
        if status is not None:
            where, args = where + " AND status = ?", [job_id, status]
        with self._images._connection("list the job's items") as conn:
            rows = conn.execute(
                f"SELECT {_ITEM} FROM job_items WHERE {where} ORDER BY idx LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [_item(row) for row in rows]

    def get_item(self, item_id: str) -> JobItem:
        with self._images._connection("read the item") as conn:
            row = conn.execute(f"SELECT {_ITEM} FROM job_items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise NotFound("No such item.")
        return _item(row)

    # -- the item's life ----------------------------------------------------------------

    def claim(self, item_id: str, now: float, lease: float) -> JobItem | None:
        with self._images._connection("claim the item") as conn, _immediate(conn):
            row = conn.execute(
                "UPDATE job_items SET status = 'running', attempts = attempts + 1, "
                "lease_until = ?, started_at = COALESCE(started_at, ?) "
                "WHERE id = ? AND (status = 'queued' OR (status = 'running' AND lease_until < ?)) "
                f"RETURNING {_ITEM}",
                (now + lease, now, item_id, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?) "
                "WHERE id = ? AND status = 'queued'",
                (now, row["job_id"]),
            )
            return _item(row)

    def renew(self, item_id: str, attempt: int, until: float) -> bool:
        return self._update("renew the lease", "lease_until = ?", (until,), item_id, attempt)

    def set_charged(self, item_id: str, attempt: int, charged: bool) -> bool:
        with self._images._connection("record the charge") as conn:
            cursor = conn.execute(
                f"UPDATE job_items SET charged = ? WHERE {_CLAIMED} AND charged = ?",
                (int(charged), item_id, attempt, int(not charged)),
            )
        return cursor.rowcount == 1

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
        status = "done" if image_id else "failed"
        return self._update(
            "finish the item",
            "status = ?, image_id = ?, error = ?, error_code = ?, finished_at = ?, "
            "lease_until = NULL",
            (status, image_id, error, error_code, now),
            item_id,
            attempt,
        )

    def release(self, item_id: str, attempt: int, until: float) -> bool:
        return self._update(
            "release the item", "status = 'queued', lease_until = ?", (until,), item_id, attempt
        )

    def _update(
        self, action: str, assignments: str, values: tuple[Any, ...], item_id: str, attempt: int
    ) -> bool:
        with self._images._connection(action) as conn:
            cursor = conn.execute(
                f"UPDATE job_items SET {assignments} WHERE {_CLAIMED}",
                (*values, item_id, attempt),
            )
        return cursor.rowcount == 1

    def due(
        self, now: float, grace: float, queued_too: bool, limit: int = 500
    ) -> builtins.list[str]:
        states = "('running', 'queued')" if queued_too else "('running')"
        with self._images._connection("find items to re-send") as conn, _immediate(conn):
            rows = conn.execute(
                f"UPDATE job_items SET status = 'queued', lease_until = ? WHERE id IN ("
                f"SELECT id FROM job_items WHERE status IN {states} AND lease_until < ? LIMIT ?"
                ") RETURNING id",
                (now + grace, now, limit),
            ).fetchall()
        return [row["id"] for row in rows]

    def complete_job(self, job_id: str, now: float) -> Job | None:
        with self._images._connection("finish the job") as conn, _immediate(conn):
            left = conn.execute(
                "SELECT COUNT(*) FROM job_items WHERE job_id = ? "
                "AND status IN ('queued', 'running')",
                (job_id,),
            ).fetchone()[0]
            if left:
                return None
            row = conn.execute(
                "UPDATE jobs SET status = 'done', finished_at = ? "
                f"WHERE id = ? AND status IN ('queued', 'running') RETURNING {_JOB}",
                (now, job_id),
            ).fetchone()
            return None if row is None else _job(row, _counts(conn, job_id))

    def cancel_job(self, user_id: str, job_id: str, now: float) -> Job:
        with self._images._connection("cancel the job") as conn, _immediate(conn):
            found = conn.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)
            ).fetchone()
            if found is None:
                raise NotFound("No such job, or it is not this key's user's.")
            inputs = conn.execute(
                "UPDATE job_items SET status = 'cancelled', finished_at = ?, lease_until = NULL "
                "WHERE job_id = ? AND status = 'queued' RETURNING input",
                (now, job_id),
            ).fetchall()
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = COALESCE(finished_at, ?) "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (now, job_id),
            )
        for row in inputs:
            if row["input"]:
                self.delete_input(row["input"])
        return self.get_job(user_id, job_id)

    def find_done(self, user_id: str, sha256: str, options_key: str) -> str | None:
        with self._images._connection("look for an earlier result") as conn:
            row = conn.execute(
                "SELECT image_id FROM job_items WHERE user_id = ? AND sha256 = ? "
                "AND options_key = ? AND status = 'done' ORDER BY finished_at DESC LIMIT 1",
                (user_id, sha256, options_key),
            ).fetchone()
        return None if row is None else str(row["image_id"])

    def counts_by_state(self) -> Counts:
        with self._images._connection("count the items") as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM job_items GROUP BY status").fetchall()
        return Counts(**{row[0]: row[1] for row in rows})


def _counts(conn: sqlite3.Connection, job_id: str) -> Counts:
    rows = conn.execute(
        "SELECT status, COUNT(*) FROM job_items WHERE job_id = ? GROUP BY status", (job_id,)
    ).fetchall()
    return Counts(**{row[0]: row[1] for row in rows})


def _job(row: sqlite3.Row, counts: Counts) -> Job:
    return Job(
        id=row["id"],
        user_id=row["user_id"],
        key_id=row["key_id"],
        status=row["status"],
        options=json.loads(row["options"]),
        options_key=row["options_key"],
        webhook_url=row["webhook_url"],
        webhook_secret=row["webhook_secret"],
        total=row["total"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        counts=counts,
    )


def _item(row: sqlite3.Row) -> JobItem:
    return JobItem(
        id=row["id"],
        job_id=row["job_id"],
        user_id=row["user_id"],
        index=row["idx"],
        name=row["name"],
        status=row["status"],
        attempts=row["attempts"],
        lease_until=row["lease_until"],
        record_id=row["record_id"],
        image_id=row["image_id"],
        error=row["error"],
        error_code=row["error_code"],
        input_ref=row["input"],
        url=row["url"],
        sha256=row["sha256"],
        options_key=row["options_key"],
        charged=bool(row["charged"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
