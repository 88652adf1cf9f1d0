""":class:`~cutout.storage.keys.KeyStore` in the image store's SQLite file (migrations 0003,
0005). Improvement submissions keep their bytes in files, ``improvements/<id>``.

It borrows the image store's connections, so both share one set-up (directory, WAL mode,
migrations) and one file: a key made by ``cutout keys create`` is visible to a running server
at once, because every operation reads the file afresh.
"""

from __future__ import annotations

import builtins
import secrets
import sqlite3
from pathlib import Path

from cutout.errors import IdempotencyConflict, InsufficientCredits, NotFound, QuotaExceeded
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
from cutout.storage.sqlite import SQLiteStore, _immediate, _storage_errors

IMPROVEMENTS_DIR = "improvements"
_IMPROVEMENT_COLUMNS = (
    "id, key_id, user_id, created_on, image_filename, tag, media_type, size_bytes"
)
_KEY_COLUMNS = (
    "id, user_id, name, prefix, created_on, last_used_on, credits, credits_used, revoked_on"
)
#: Float sums of quarter credits are exact, but leave room for allowances like 0.1.
EPSILON = 1e-9


class SQLiteKeyStore:
    def __init__(self, images: SQLiteStore) -> None:
        self._images = images

    def add_key(self, key: NewKey) -> ApiKey:
        stored = ApiKey(
            id=secrets.token_hex(12),
            user_id=key.user_id,
            name=key.name,
            prefix=key.prefix,
            created_on=now_created_on(),
            last_used_on=None,
            credits=key.credits,
            credits_used=0.0,
            revoked_on=None,
        )
        with self._images._connection("save the API key") as conn:
            conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}, secret_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.id,
                    stored.user_id,
                    stored.name,
                    stored.prefix,
                    stored.created_on,
                    None,
                    stored.credits,
                    0.0,
                    None,
                    key.secret_hash,
                ),
            )
        return stored

    def find_key(self, secret_hash: str) -> ApiKey | None:
        with self._images._connection("check the API key") as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?", (secret_hash,)
            ).fetchone()
        return _key(row) if row else None

    def list_keys(self, user_id: str | None = None) -> builtins.list[ApiKey]:
        query = f"SELECT {_KEY_COLUMNS} FROM api_keys"
        args: tuple[str, ...] = ()
        if user_id is not None:
            query, args = query + " WHERE user_id = ?", (user_id,)
        with self._images._connection("list the API keys") as conn:
            rows = conn.execute(query + " ORDER BY created_on DESC, seq DESC", args).fetchall()
        return [_key(row) for row in rows]

    def get_key(self, key_id: str) -> ApiKey:
        with self._images._connection("read the API key") as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        return _key(_found(row))

    def revoke_key(self, key_id: str, user_id: str | None = None) -> ApiKey:
        owner = "" if user_id is None else " AND user_id = ?"
        args = (now_created_on(), key_id) + (() if user_id is None else (user_id,))
        with self._images._connection("revoke the API key") as conn:
            rows = conn.execute(
                "UPDATE api_keys SET revoked_on = COALESCE(revoked_on, ?) "
                f"WHERE id = ?{owner} RETURNING {_KEY_COLUMNS}",
                args,
            ).fetchall()
        return _key(_found(rows[0] if rows else None))

    def touch_key(self, key_id: str, when: str) -> None:
        with self._images._connection("record the API key's use") as conn:
            conn.execute("UPDATE api_keys SET last_used_on = ? WHERE id = ?", (when, key_id))

    def charge_key(self, key_id: str, cost: float, token: str | None = None) -> ApiKey:
        with self._images._connection("charge the API key") as conn, _immediate(conn):
            if token is not None and not _take_token(conn, key_id, cost, token):
                return self._key_row(conn, key_id)  # charged (or given back) already
            rows = conn.execute(
                "UPDATE api_keys SET credits_used = credits_used + ? "
                "WHERE id = ? AND revoked_on IS NULL "
                "AND (credits IS NULL OR credits - credits_used >= ? - ?) "
                f"RETURNING {_KEY_COLUMNS}",
                (cost, key_id, cost, EPSILON),
            ).fetchall()
            if rows:
                return _key(rows[0])
            exists = conn.execute(
                "SELECT 1 FROM api_keys WHERE id = ? AND revoked_on IS NULL", (key_id,)
            ).fetchone()
            # Raised inside the transaction: a token taken above is rolled back with it.
            if exists:
                raise InsufficientCredits("This API key has no credits left for this image.")
            raise NotFound("No such API key.")

    def _key_row(self, conn: sqlite3.Connection, key_id: str) -> ApiKey:
        row = conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone()
        return _key(_found(row))

    def begin_idempotent(
        self, user_id: str, key: str, fingerprint: str, now: float
    ) -> StoredResponse | None:
        with self._images._connection("check the Idempotency-Key") as conn, _immediate(conn):
            conn.execute("DELETE FROM idempotency WHERE created < ?", (now - IDEMPOTENCY_TTL,))
            row = conn.execute(
                "SELECT fingerprint, status, body FROM idempotency WHERE user_id = ? AND key = ?",
                (user_id, key),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO idempotency (user_id, key, fingerprint, created) "
                    "VALUES (?, ?, ?, ?)",
                    (user_id, key, fingerprint, now),
                )
                return None
        return _replay(row["fingerprint"], fingerprint, row["status"], row["body"])

    def finish_idempotent(self, user_id: str, key: str, response: StoredResponse) -> None:
        with self._images._connection("store the answer for the Idempotency-Key") as conn:
            conn.execute(
                "UPDATE idempotency SET status = ?, body = ? WHERE user_id = ? AND key = ?",
                (response.status, response.body, user_id, key),
            )

    def abandon_idempotent(self, user_id: str, key: str) -> None:
        with self._images._connection("release the Idempotency-Key") as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE user_id = ? AND key = ? AND status IS NULL",
                (user_id, key),
            )

    def add_improvement(self, item: Improvement, quota: Quota) -> str:
        """The file first, then the row, in a transaction that checks the quota (SQLite lets
        one writer in at a time, so the sums cannot move meanwhile); the file goes again if
        the row cannot be written."""
        improvement_id = secrets.token_hex(12)
        folder = self._improvements_dir()
        with _storage_errors("keep the submitted image"):
            self._images._setup()
            folder.mkdir(mode=0o700, exist_ok=True)
            self._images._write(folder / improvement_id, item.data, "improvement")
        try:
            with (
                self._images._connection("keep the submitted image") as conn,
                _immediate(conn),
            ):
                _check_quota(conn, item, quota)
                conn.execute(
                    "INSERT INTO improvements (id, key_id, user_id, created_on, image_filename, "
                    "tag, media_type, size_bytes, file) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        improvement_id,
                        item.key_id,
                        item.user_id,
                        now_created_on(),
                        item.image_filename,
                        item.tag,
                        item.media_type,
                        len(item.data),
                        improvement_id,
                    ),
                )
        except BaseException:
            (folder / improvement_id).unlink(missing_ok=True)
            raise
        return improvement_id

    def list_improvements(self, key_id: str | None = None) -> builtins.list[ImprovementInfo]:
        where, args = ("WHERE key_id = ?", (key_id,)) if key_id else ("", ())
        with self._images._connection("list the submitted images") as conn:
            rows = conn.execute(
                f"SELECT {_IMPROVEMENT_COLUMNS} FROM improvements {where} "
                "ORDER BY created_on DESC, rowid DESC",
                args,
            ).fetchall()
        return [_improvement(row) for row in rows]

    def read_improvement(self, improvement_id: str) -> tuple[ImprovementInfo, bytes]:
        with self._images._connection("read the submitted image") as conn:
            row = conn.execute(
                f"SELECT {_IMPROVEMENT_COLUMNS}, file, data FROM improvements WHERE id = ?",
                (improvement_id,),
            ).fetchone()
        if row is None:
            raise NotFound("No such submitted image.")
        if row["file"] is None:  # kept before version 5, inside the row
            return _improvement(row), bytes(row["data"])
        with _storage_errors("read the submitted image"):
            return _improvement(row), (self._improvements_dir() / row["file"]).read_bytes()

    def purge_improvements(
        self, key_id: str | None = None, before: str | None = None
    ) -> tuple[int, int]:
        clauses = [c for c, v in (("key_id = ?", key_id), ("created_on < ?", before)) if v]
        args = [v for v in (key_id, before) if v]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._images._connection("delete submitted images") as conn, _immediate(conn):
            rows = conn.execute(
                f"DELETE FROM improvements {where} RETURNING file, size_bytes", args
            ).fetchall()
            named = {r[0] for r in conn.execute("SELECT file FROM improvements") if r[0]}
        folder = self._improvements_dir()
        # The rows' files, and any file no row names (a submission whose row never came).
        stray = [p for p in folder.glob("*") if p.name not in named] if folder.is_dir() else []
        with _storage_errors("delete submitted images"):
            for path in stray:
                path.unlink(missing_ok=True)
        return len(rows), sum(int(r[1]) for r in rows)

    def _improvements_dir(self) -> Path:
        return self._images.data_dir / IMPROVEMENTS_DIR

    def count_improvements(self, key_id: str) -> int:
        with self._images._connection("count the submitted images") as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM improvements WHERE key_id = ?", (key_id,)
            ).fetchone()
        return int(row[0])


def _check_quota(conn: sqlite3.Connection, item: Improvement, quota: Quota) -> None:
    size = len(item.data)
    for scope, where, args, limit in (
        ("this key", "WHERE key_id = ?", (item.key_id,), quota.per_key),
        ("this server", "", (), quota.total),
    ):
        used = conn.execute(
            f"SELECT COALESCE(SUM(size_bytes), 0) FROM improvements {where}", args
        ).fetchone()[0]
        if used + size > limit:
            raise QuotaExceeded(
                f"The images kept for the Improvement Program by {scope} have reached their "
                f"quota ({limit / 2**20:g} MB): nothing more is kept until the operator "
                "purges some (`cutout improvements purge`)."
            )


def _improvement(row: sqlite3.Row) -> ImprovementInfo:
    return ImprovementInfo(*(row[c] for c in _IMPROVEMENT_COLUMNS.split(", ")))


def _replay(
    stored_fingerprint: str, fingerprint: str, status: int | None, body: str | None
) -> StoredResponse:
    """The first answer for a reused Idempotency-Key, or the reason there is none to give."""
    if stored_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used for a different request; use a new key."
        )
    if status is None or body is None:
        raise IdempotencyConflict(
            "A request with this Idempotency-Key is still being processed; retry in a moment."
        )
    return StoredResponse(status, body)


def _found(row: sqlite3.Row | None) -> sqlite3.Row:
    if row is None:
        raise NotFound("No such API key.")
    return row


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_on=row["created_on"],
        last_used_on=row["last_used_on"],
        credits=row["credits"],
        credits_used=float(row["credits_used"]),
        revoked_on=row["revoked_on"],
    )


def _take_token(conn: sqlite3.Connection, key_id: str, cost: float, token: str) -> bool:
    """Record a charge (cost > 0) or its refund (cost < 0) under *token*; False when that
    was done already, so the key must not change again."""
    if cost >= 0:
        if conn.execute("SELECT 1 FROM key_charges WHERE token = ?", (token,)).fetchone():
            return False
        conn.execute(
            "INSERT INTO key_charges (token, key_id, cost) VALUES (?, ?, ?)", (token, key_id, cost)
        )
        return True
    return conn.execute("DELETE FROM key_charges WHERE token = ?", (token,)).rowcount == 1
