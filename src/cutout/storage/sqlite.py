"""The embedded store: SQLite (WAL) for records, one file per image under ``images/``.

Layout under ``data_dir``::

    cutout.sqlite3            records (migrations/NNNN_*.sql), no image bytes
    images/<id>.original      the upload, written atomically (temp file + os.replace)
    images/<id>.processed     the model's cut-out (never overwritten)
    images/<id>.<kind>-<hex>  the record's other images (its edited cut-out, thumbnails), each
                              named by a ``record_images`` row; a new version gets a new name

Concurrency: every operation opens its own short-lived connection (cheap for a local file),
so no connection is ever shared between threads or carried across a gunicorn fork. Writes
that check the per-user limit run in ``BEGIN IMMEDIATE`` transactions: SQLite lets one
writer in at a time, across threads *and* processes, so "count, then insert" cannot
interleave with another add. The busy timeout makes the others wait instead of failing.

All-or-nothing: images are written before the row, and removed again if the row cannot be
written. A crash between the two leaves files without a row; :meth:`SQLiteStore.sweep` removes
those (it runs once when the store is first used), and also any file no row names any more.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cutout.errors import LimitReached, NotFound, StorageError
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

DB_NAME = "cutout.sqlite3"
IMAGES_DIR = "images"
#: How long a writer waits for another one, seconds. Well under ORPHAN_AGE, so a file older
#: than that with no row can no longer belong to an add that is still running.
BUSY_TIMEOUT = 15.0
ORPHAN_AGE = 60.0
_ID = re.compile(r"[0-9a-f]{24}")
_MIGRATION = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_COLUMNS = (
    "id, user_id, image_name, created_on, engine, model, "
    + ", ".join(
        f"{k}_{f}" for k in KINDS for f in ("media_type", "size_bytes", "width", "height", "sha256")
    )
    + ", confidence, needs_review"
)
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS.split(",")))
_INFO = ("media_type", "size_bytes", "width", "height", "sha256")
#: A record with its current edit, if any (the row of kind 'edit' in record_images).
_SELECT = (
    "SELECT "
    + ", ".join(f"r.{c}" for c in _COLUMNS.split(", "))
    + ", r.revision, "
    + ", ".join(f"e.{f} AS edit_{f}" for f in (*_INFO, "file"))
    + " FROM records r LEFT JOIN record_images e ON e.record_id = r.id AND e.kind = 'edit'"
)
EDIT = "edit"


class SQLiteStore:
    """:class:`~cutout.storage.base.ImageStore` on a local directory. Thread- and fork-safe.

    Nothing touches the disk until the first call; then the directory, the schema and the WAL
    mode are set up once per instance (and retried on the next call if that failed, so a data
    volume that appears late is picked up without a restart).
    """

    def __init__(self, data_dir: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / DB_NAME
        self.images_dir = data_dir / IMAGES_DIR
        self._busy_timeout = busy_timeout
        self._ready = False
        self._ready_lock = threading.Lock()

    # -- the ImageStore protocol -----------------------------------------------------------

    def add(self, record: NewRecord, *, limit: int) -> Record:
        record_id = secrets.token_hex(12)
        written: list[Path] = []
        with _storage_errors("store the record"):
            self._setup()
            try:
                for kind in KINDS:
                    written.append(self._save_image(record_id, kind, _image(record, kind).data))
                return self._insert_record(record_id, record, limit)
            except BaseException:
                self._discard(record_id, written)
                raise

    def count(self, user_id: str) -> int:
        with self._connection("count the records") as conn:
            cursor = conn.execute("SELECT COUNT(*) FROM records WHERE user_id = ?", (user_id,))
            return int(cursor.fetchone()[0])

    def list(self, user_id: str) -> list[Record]:
        with self._connection("list the records") as conn:
            rows = conn.execute(
                f"{_SELECT} WHERE r.user_id = ? ORDER BY r.created_on DESC, r.seq DESC",
                (user_id,),
            )
            return [_record(row) for row in rows]

    def get(self, user_id: str, record_id: str) -> Record:
        _check_id(record_id)
        with self._connection("read the record") as conn:
            return _select(conn, user_id, record_id)

    def rename(self, user_id: str, record_id: str, image_name: str) -> Record:
        _check_id(record_id)
        with self._connection("rename the record") as conn, _immediate(conn):
            cursor = conn.execute(
                "UPDATE records SET image_name = ? WHERE id = ? AND user_id = ? RETURNING id",
                (image_name, record_id, user_id),
            )
            _found(_only(cursor))
            return _select(conn, user_id, record_id)

    def delete(self, user_id: str, record_id: str) -> None:
        """Delete the rows, then every file of the record (a crash in between leaves files the
        sweep removes)."""
        _check_id(record_id)
        with self._connection("delete the record") as conn, _immediate(conn):
            cursor = conn.execute(
                "DELETE FROM records WHERE id = ? AND user_id = ? RETURNING id",
                (record_id, user_id),
            )
            _found(_only(cursor))
            conn.execute("DELETE FROM record_images WHERE record_id = ?", (record_id,))
        # By name rather than by row: this also takes an edit or thumbnail whose writer is
        # still between its file and its row (that writer then finds no record and stops).
        _remove_files(builtins.list(self.images_dir.glob(f"{record_id}.*")))

    def read_image(self, user_id: str, record_id: str, kind: Kind) -> tuple[ImageInfo, bytes]:
        _check_id(record_id)
        info, path, edited = self._current(user_id, record_id, kind)
        try:
            with _storage_errors(f"read the {kind} image"):
                return info, path.read_bytes()
        except StorageError as exc:
            if not (edited and isinstance(exc.__cause__, FileNotFoundError)):
                raise
        # An edit replaced between the row and the read: the row names the new file now.
        info, path, _ = self._current(user_id, record_id, kind)
        with _storage_errors(f"read the {kind} image"):
            return info, path.read_bytes()

    def save_edit(self, user_id: str, record_id: str, processed: NewImage | None) -> Record:
        _check_id(record_id)
        extra = None if processed is None else _Extra(processed.info(), processed.data, None)
        with _storage_errors("save the edit"):
            self._setup()
            self._replace_extra(user_id, record_id, EDIT, extra)
        return self.get(user_id, record_id)

    def save_thumbnail(self, user_id: str, record_id: str, kind: Kind, thumb: Thumbnail) -> None:
        _check_id(record_id)
        image = NewImage(thumb.data, thumb.media_type, thumb.width, thumb.height)
        with _storage_errors("save the thumbnail"):
            self._setup()
            extra = _Extra(image.info(), thumb.data, thumb.source_sha256)
            self._replace_extra(user_id, record_id, _thumb(kind), extra)

    def read_thumbnail(self, user_id: str, record_id: str, kind: Kind) -> Thumbnail | None:
        _check_id(record_id)
        with self._connection("read the thumbnail") as conn:
            row = conn.execute(
                "SELECT r.id, e.* FROM records r LEFT JOIN record_images e "
                "ON e.record_id = r.id AND e.kind = ? WHERE r.id = ? AND r.user_id = ?",
                (_thumb(kind), record_id, user_id),
            ).fetchone()
        if _found(row)["file"] is None:
            return None
        try:
            with _storage_errors("read the thumbnail"):
                data = (self.images_dir / row["file"]).read_bytes()
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None  # replaced meanwhile: the caller makes one again
            raise
        return Thumbnail(data, row["media_type"], row["width"], row["height"], row["source_sha256"])

    def ping(self) -> None:
        with self._connection("reach the database") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Nothing to release: connections live for one operation."""

    # -- recovery --------------------------------------------------------------------------

    def orphans(self, min_age: float = ORPHAN_AGE) -> builtins.list[Path]:
        """Image and temp files older than *min_age* seconds that no record refers to.

        The age guard keeps this from racing an add that has written its files but not yet
        its row.
        """
        with self._connection("look for orphaned images") as conn:
            return self._orphans(conn, min_age)

    def sweep(self, min_age: float = ORPHAN_AGE) -> int:
        """Remove :meth:`orphans`; return how many files went."""
        found = self.orphans(min_age)
        _remove_files(found)
        return len(found)

    # -- internals (tests patch _save_image and _insert_record to inject failures) ---------

    def _save_image(self, record_id: str, kind: Kind, data: bytes) -> Path:
        path = self._image_path(record_id, kind)
        self._write(path, data)
        return path

    def _write(self, path: Path, data: bytes) -> None:
        """Write *data* so the final name holds either nothing or all of it."""
        fd, tmp = tempfile.mkstemp(dir=self.images_dir, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())  # the row will vouch for these bytes: get them to disk
            os.replace(tmp, path)
        except BaseException:
            _remove_files([Path(tmp)])
            raise

    def _current(self, user_id: str, record_id: str, kind: Kind) -> tuple[ImageInfo, Path, bool]:
        """The info and file of the record's current *kind* image; True if it is an edit."""
        with self._connection(f"read the {kind} image") as conn:
            row = _found(conn.execute(f"{_SELECT} WHERE r.id = ? AND r.user_id = ?",
                                      (record_id, user_id)).fetchone())  # fmt: skip
        record = _record(row)  # one statement: the edit's info and file name agree
        info = record.original if kind == "original" else record.processed
        assert info is not None  # every SQLite row has both images
        if kind == "processed" and record.edited:
            return info, self.images_dir / row["edit_file"], True
        return info, self._image_path(record_id, kind), False

    def _write_extra(self, record_id: str, kind: str, data: bytes) -> str:
        """Write one of the record's other images under a fresh name; return the name."""
        name = f"{record_id}.{kind.replace(':', '-')}-{secrets.token_hex(4)}"
        self._write(self.images_dir / name, data)
        return name

    def _replace_extra(self, user_id: str, record_id: str, kind: str, extra: _Extra | None) -> None:
        """Point the record's *kind* row at a newly written file (or drop it), then remove the
        file it named. The record is checked in the same transaction, so a record deleted
        meanwhile gets no row; the new file then goes again.
        """
        new = self._write_extra(record_id, kind, extra.data) if extra else None
        try:
            with self._connection("save the image") as conn, _immediate(conn):
                owned = conn.execute(
                    "SELECT 1 FROM records WHERE id = ? AND user_id = ?", (record_id, user_id)
                ).fetchone()
                _found(owned)
                old = _extra_file(conn, record_id, kind)
                conn.execute(
                    "DELETE FROM record_images WHERE record_id = ? AND kind = ?",
                    (record_id, kind),
                )
                if extra and new:
                    conn.execute(
                        "INSERT INTO record_images (record_id, kind, file, media_type, "
                        "size_bytes, width, height, sha256, source_sha256) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (record_id, kind, new, *_info_values(extra.info), extra.source_sha256),
                    )
                if kind == EDIT:
                    conn.execute(
                        "UPDATE records SET revision = revision + 1 WHERE id = ?", (record_id,)
                    )
        except BaseException:
            if new:
                _remove_files([self.images_dir / new])
            raise
        if old:
            _remove_files([self.images_dir / old])

    def _insert_record(self, record_id: str, record: NewRecord, limit: int) -> Record:
        """Count and insert under SQLite's single-writer lock, so the limit holds exactly."""
        with self._connection("save the record") as conn, _immediate(conn):
            used = conn.execute(
                "SELECT COUNT(*) FROM records WHERE user_id = ?", (record.user_id,)
            ).fetchone()[0]
            if used >= limit:
                raise LimitReached()
            stored = _new_record(record_id, record, now_created_on())
            conn.execute(
                f"INSERT INTO records ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",
                _row_values(stored),
            )
        return stored

    def _discard(self, record_id: str, written: builtins.list[Path]) -> None:
        """Undo a failed add: the row (should it exist after all), then the files.

        If the row cannot be removed, the files stay: the sweep deletes them once the row is
        really gone, so a row never loses its images.
        """
        try:
            with closing(self._open()) as conn:
                conn.execute("DELETE FROM records WHERE id = ?", (record_id,))
        except sqlite3.Error as exc:
            log.warning("Could not undo record %s (the sweep will): %s", record_id, exc)
            return
        _remove_files(written)

    def _image_path(self, record_id: str, kind: Kind) -> Path:
        return self.images_dir / f"{record_id}.{kind}"

    @contextmanager
    def _connection(self, action: str) -> Iterator[sqlite3.Connection]:
        """A fresh connection for one operation; sqlite3/OS errors become StorageError."""
        with _storage_errors(action):
            self._setup()
            conn = self._open()
            try:
                yield conn
            finally:
                conn.close()

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes that need one say so.
        conn = sqlite3.connect(self.db_path, timeout=self._busy_timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints, never corrupt
        return conn

    def _setup(self) -> None:
        """Create the directory, schema and WAL mode once, then sweep old orphans."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            self.images_dir.mkdir(parents=True, exist_ok=True)
            conn = self._open()
            try:
                self._enable_wal(conn)
                migrate(conn)
                self._sweep_at_start(conn)
            finally:
                conn.close()
            self._ready = True

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL (it sticks to the file), waiting out other processes doing the same.

        The switch needs the database to itself and, unlike ordinary writes, does not wait on
        the busy timeout: two workers starting on a new file would otherwise fail at once.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
                continue
            if mode != "wal":
                raise StorageError(f"SQLite refused WAL mode for {self.db_path} (got {mode!r}).")
            return

    def _sweep_at_start(self, conn: sqlite3.Connection) -> None:
        try:
            found = self._orphans(conn, ORPHAN_AGE)
            _remove_files(found)
        except (OSError, sqlite3.Error) as exc:  # recovery is best effort; never block start
            log.warning("Could not sweep orphaned images in %s: %s", self.images_dir, exc)
            return
        if found:
            log.info("Removed %d orphaned image files from %s", len(found), self.images_dir)

    def _orphans(self, conn: sqlite3.Connection, min_age: float) -> builtins.list[Path]:
        cutoff = time.time() - min_age
        candidates = [
            p for p in self.images_dir.iterdir() if p.is_file() and p.stat().st_mtime <= cutoff
        ]
        if not candidates:
            return []
        live = {row[0] for row in conn.execute("SELECT id FROM records")}
        extras = {row[0] for row in conn.execute("SELECT file FROM record_images")}

        def referenced(path: Path) -> bool:
            # Temp files start with "."; their id part never matches a live id.
            record_id, _, rest = path.name.partition(".")
            return record_id in live and (rest in KINDS or path.name in extras)

        return [p for p in candidates if not referenced(p)]


# -- helpers -------------------------------------------------------------------------------


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Turn driver and disk errors into :class:`StorageError`, saying what failed."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(f"Could not {action}: the database failed ({exc}).") from exc
    except OSError as exc:
        raise StorageError(f"Could not {action}: {exc.strerror or exc}.") from exc


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock up front.

    A deferred transaction would read first and then try to upgrade, and in WAL mode that
    upgrade fails at once (SQLITE_BUSY_SNAPSHOT) instead of waiting on the busy timeout.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrations() -> builtins.list[tuple[int, str]]:
    """``(version, sql)`` of every file in ``migrations/``, in version order."""
    folder = resources.files("cutout.storage").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text("utf-8")))
    return sorted(found)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; return it. Safe with several processes.

    Each pending migration runs in one immediate transaction with its ``user_version`` bump,
    after re-reading the version under the write lock, so a concurrent starter that got there
    first is seen and the migration is never applied twice.
    """
    version = 0
    for number, sql in migrations():
        with _immediate(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= number:
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number:d}")
            version = number
    return version


def _statements(sql: str) -> builtins.list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in pending.splitlines()
    ):
        raise StorageError(f"Migration has an unterminated statement: {pending.strip()[:60]}")
    return statements


@dataclass(frozen=True)
class _Extra:
    info: ImageInfo
    data: bytes
    source_sha256: str | None


def _thumb(kind: Kind) -> str:
    return f"thumb:{kind}"


def _select(conn: sqlite3.Connection, user_id: str, record_id: str) -> Record:
    row = conn.execute(
        f"{_SELECT} WHERE r.id = ? AND r.user_id = ?", (record_id, user_id)
    ).fetchone()
    return _record(_found(row))


def _extra_file(conn: sqlite3.Connection, record_id: str, kind: str) -> str | None:
    row = conn.execute(
        "SELECT file FROM record_images WHERE record_id = ? AND kind = ?", (record_id, kind)
    ).fetchone()
    return None if row is None else str(row[0])


def _info_values(info: ImageInfo) -> tuple[str, int, int, int, str]:
    return info.media_type, info.size_bytes, info.width, info.height, info.sha256


def _check_id(record_id: str) -> None:
    # Ids also name files, so this check is what keeps "../x" out of the images directory.
    if not _ID.fullmatch(record_id):
        raise NotFound("No such record.")


def _only(cursor: sqlite3.Cursor) -> sqlite3.Row | None:
    """The one row of a statement, run to completion (for RETURNING, that means committed)."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


def _found(row: sqlite3.Row | None) -> sqlite3.Row:
    if row is None:
        raise NotFound("No such record.")
    return row


def _image(record: NewRecord, kind: Kind) -> NewImage:
    return record.original if kind == "original" else record.processed


def _remove_files(paths: list[Path]) -> None:
    """Best-effort cleanup: a file that cannot go now is an orphan for the next sweep."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("Could not remove %s (the next sweep will): %s", path, exc)


def _new_record(record_id: str, record: NewRecord, created_on: str) -> Record:
    return Record(
        id=record_id,
        user_id=record.user_id,
        image_name=record.image_name,
        created_on=created_on,
        original=record.original.info(),
        processed=record.processed.info(),
        engine=record.engine,
        model=record.model,
        confidence=record.confidence,
        needs_review=record.needs_review,
    )


def _row_values(record: Record) -> list[str | int | float | None]:
    """*record* in the order of ``_COLUMNS``."""
    values: list[str | int | float | None] = [
        record.id,
        record.user_id,
        record.image_name,
        record.created_on,
        record.engine,
        record.model,
    ]
    for info in (record.original, record.processed):
        assert info is not None  # new records always carry both images
        values += [info.media_type, info.size_bytes, info.width, info.height, info.sha256]
    review = None if record.needs_review is None else int(record.needs_review)
    return [*values, record.confidence, review]


def _record(row: sqlite3.Row) -> Record:
    """A Record from a ``_SELECT`` row: ``processed`` is the edit when there is one."""

    def info(prefix: str) -> ImageInfo:
        return ImageInfo(
            media_type=row[f"{prefix}_media_type"],
            size_bytes=row[f"{prefix}_size_bytes"],
            width=row[f"{prefix}_width"],
            height=row[f"{prefix}_height"],
            sha256=row[f"{prefix}_sha256"],
        )

    edited = row["edit_sha256"] is not None
    return Record(
        id=row["id"],
        user_id=row["user_id"],
        image_name=row["image_name"],
        created_on=row["created_on"],
        original=info("original"),
        processed=info("edit" if edited else "processed"),
        engine=row["engine"],
        model=row["model"],
        confidence=row["confidence"],
        needs_review=None if row["needs_review"] is None else bool(row["needs_review"]),
        edited=edited,
        revision=row["revision"],
    )
