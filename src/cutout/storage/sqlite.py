"""The embedded store: SQLite (WAL) for records, one file per image under ``images/``.

Layout under ``data_dir``::

    cutout.sqlite3            records (migrations/NNNN_*.sql), no image bytes
    images/<id>.original      the upload, written atomically (temp file + os.replace)
    images/<id>.processed     the model's cut-out (never overwritten)
    images/<id>.<kind>-<hex>  the record's other images (its edited cut-out, thumbnails), each
                              named by a ``record_images`` row; a new version gets a new name
    locks/<id>.lock           held (flock) by whoever is writing files of <id>, gone after it

Concurrency: every operation opens its own short-lived connection (cheap for a local file),
so no connection is ever shared between threads or carried across a gunicorn fork. Writes
that check the per-user limit run in ``BEGIN IMMEDIATE`` transactions: SQLite lets one
writer in at a time, across threads *and* processes, so "count, then insert" cannot
interleave with another add. The busy timeout makes the others wait instead of failing.

All-or-nothing: images are written before the row, and removed again if the row cannot be
written. A crash between the two leaves files without a row; :meth:`SQLiteStore.sweep` removes
those, and also any file of a live record that no row names any more (an edit or thumbnail
replaced while its writer died): once when the store is first used, then periodically while the
server runs (:mod:`cutout.storage.sweeper`), in every worker.

**Why the sweep never takes a live writer's files.** An add, an edit or a thumbnail holds an
exclusive ``flock`` on ``locks/<id>.lock`` from before its first byte is written until its row
is committed (or its files are removed again). The sweep deletes files of an id only while
holding that same lock, and only if, once it holds it, no row names them. ``flock`` belongs to
the open file and the kernel drops it when the holder dies, so "I got the lock" proves that no
live process (any gunicorn worker, any thread) is still writing that id, however slow it is: no
clock is involved. Both sides check, after locking, that the lock file they hold is still the
one at that path (a finished writer or a sweep unlinks it), the usual lock-file discipline.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
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

DB_NAME = "cutout.sqlite3"
IMAGES_DIR = "images"
LOCKS_DIR = "locks"
#: How long a writer waits for another one, seconds.
BUSY_TIMEOUT = 15.0
#: The sweep's default age guard. Zero: the per-id lock, not a file's age, says whether a
#: writer is alive (see the module docstring). Tests pass larger values to pick files.
ORPHAN_AGE = 0.0
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

    def __init__(
        self, data_dir: Path, *, busy_timeout: float = BUSY_TIMEOUT, faults: Faults = NO_FAULTS
    ) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / DB_NAME
        self.images_dir = data_dir / IMAGES_DIR
        self.locks_dir = data_dir / LOCKS_DIR
        self._busy_timeout = busy_timeout
        self._faults = faults
        self._ready = False
        self._ready_lock = threading.Lock()

    # -- the ImageStore protocol -----------------------------------------------------------

    def add(self, record: NewRecord, *, limit: int, record_id: str | None = None) -> Record:
        if record_id is not None:
            _check_id(record_id)
        record_id = record_id or secrets.token_hex(12)
        written: list[Path] = []
        with _storage_errors("store the record"):
            self._setup()
            with self._writing(record_id):  # also serialises two adds of one given id
                existing = self._existing(record.user_id, record_id)
                if existing is not None:
                    return existing
                try:
                    self._faults.reached("add.start")
                    for kind in KINDS:
                        data = _image(record, kind).data
                        written.append(self._save_image(record_id, kind, data))
                        self._faults.reached(f"add.after_{kind}")
                    stored = self._insert_record(record_id, record, limit)
                    self._faults.reached("add.after_row")
                    return stored
                except BaseException:
                    self._discard(record_id, written)
                    raise

    def _existing(self, user_id: str, record_id: str) -> Record | None:
        with self._connection("read the record") as conn:
            try:
                return _select(conn, user_id, record_id)
            except NotFound:
                return None

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
        """Image and temp files (older than *min_age* seconds) that no row names and no live
        writer is writing (its lock is free). A snapshot: :meth:`sweep` re-checks."""
        with self._connection("look for orphaned images") as conn:
            found = []
            for record_id in self._unclaimed(conn, min_age):
                with self._sweep_lock(record_id) as free:
                    if free:
                        found += self._stray_files(conn, record_id)
            return sorted(found)

    def sweep(self, min_age: float = ORPHAN_AGE) -> int:
        """Remove the files of writers that died, and of deletes cut short; return how many.

        Safe to run at any time, from any number of processes: see the module docstring.
        """
        with self._connection("remove orphaned images") as conn:
            return self._sweep(conn, min_age)

    # -- internals (tests patch _save_image and _insert_record to inject failures) ---------

    def _save_image(self, record_id: str, kind: Kind, data: bytes) -> Path:
        path = self._image_path(record_id, kind)
        self._write(path, data, kind)
        return path

    def _write(self, path: Path, data: bytes, label: str) -> None:
        """Write *data* so the final name holds either nothing or all of it."""
        fd, tmp = tempfile.mkstemp(dir=self.images_dir, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                half = len(data) // 2
                out.write(data[:half])
                if self._faults.active:  # a crash test stops the process mid-file here
                    out.flush()
                    self._faults.reached(f"write.{label}.half")
                out.write(data[half:])
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
        label = kind.replace(":", "-")
        name = f"{record_id}.{label}-{secrets.token_hex(4)}"
        self._write(self.images_dir / name, data, label)
        return name

    def _replace_extra(self, user_id: str, record_id: str, kind: str, extra: _Extra | None) -> None:
        """Point the record's *kind* row at a newly written file (or drop it), then remove the
        file it named. The record is checked in the same transaction, so a record deleted
        meanwhile gets no row; the new file then goes again. The id's lock is held throughout,
        so the sweep cannot take the new file before its row names it.
        """
        with self._writing(record_id):
            self._replace_extra_locked(user_id, record_id, kind, extra)

    def _replace_extra_locked(
        self, user_id: str, record_id: str, kind: str, extra: _Extra | None
    ) -> None:
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
            _private_dirs(self.data_dir, self.images_dir, self.locks_dir)
            # Made owner-only before SQLite opens it: its -wal and -shm files take its mode.
            os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
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
            removed = self._sweep(conn, ORPHAN_AGE)
        except (OSError, sqlite3.Error) as exc:  # recovery is best effort; never block start
            log.warning("Could not sweep orphaned images in %s: %s", self.images_dir, exc)
            return
        if removed:
            log.info("Removed %d orphaned image files from %s", removed, self.images_dir)

    # -- the per-id lock and the sweep (see the module docstring) ---------------------------

    @contextmanager
    def _writing(self, record_id: str) -> Iterator[None]:
        """Hold *record_id*'s lock while writing its files; the sweep leaves them alone."""
        path = self.locks_dir / f"{record_id}.lock"
        fd = _lock(path, blocking=True)
        assert fd is not None
        try:
            yield
        finally:
            _unlock(path, fd)

    @contextmanager
    def _sweep_lock(self, record_id: str) -> Iterator[bool]:
        """Take *record_id*'s lock if no live writer holds it; yield whether we got it."""
        path = self.locks_dir / f"{record_id}.lock"
        fd = _lock(path, blocking=False)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                _unlock(path, fd)

    def _unclaimed(self, conn: sqlite3.Connection, min_age: float) -> builtins.list[str]:
        """Ids with files (older than *min_age*) that no row names: candidates to sweep."""
        by_id: dict[str, builtins.list[Path]] = {}
        for path in files_written_by(self.images_dir, time.time() - min_age):
            by_id.setdefault(_id_of(path), []).append(path)
        if not by_id:
            return []
        live = {row[0] for row in conn.execute("SELECT id FROM records")}
        named = {row[0] for row in conn.execute("SELECT file FROM record_images")}
        return sorted(
            record_id
            for record_id, paths in by_id.items()
            if record_id not in live or any(not _named(p, named) for p in paths)
        )

    def _stray_files(self, conn: sqlite3.Connection, record_id: str) -> builtins.list[Path]:
        """Every file of *record_id* that no row names now (call it holding the id's lock)."""
        files = [
            *self.images_dir.glob(f"{record_id}.*"),
            *self.images_dir.glob(f".{record_id}.*.tmp"),
        ]
        if conn.execute("SELECT 1 FROM records WHERE id = ?", (record_id,)).fetchone() is None:
            return [p for p in files if p.exists()]
        rows = conn.execute("SELECT file FROM record_images WHERE record_id = ?", (record_id,))
        named = {row[0] for row in rows}
        return [p for p in files if not _named(p, named) and p.exists()]

    def _sweep(self, conn: sqlite3.Connection, min_age: float) -> int:
        removed = 0
        for record_id in self._unclaimed(conn, min_age):
            with self._sweep_lock(record_id) as free:
                if not free:
                    continue  # a live writer is at it
                # Re-read under the lock: the writer may have committed since we listed.
                paths = self._stray_files(conn, record_id)
                _remove_files(paths)
                removed += len(paths)
        # Lock files of writers that died before writing anything (or after their row):
        # taking a free lock removes its file; a live writer's lock is busy and stays.
        for lock in self.locks_dir.glob("*.lock"):
            with self._sweep_lock(lock.stem):
                pass
        return removed


# -- helpers -------------------------------------------------------------------------------


def _private_dirs(*folders: Path) -> None:
    """Create *folders* (and missing parents) readable by their owner only: they hold other
    people's photos. Folders that exist keep their mode (a volume's owner decides it)."""
    for folder in folders:
        if not folder.exists():
            folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)  # whatever the umask said


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


def files_written_by(folder: Path, cutoff: float) -> list[Path]:
    """The files in *folder* last written at or before *cutoff* (epoch seconds). A file
    removed meanwhile (a writer's temp file, a delete) is skipped; a missing folder has none."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for path in entries:
        try:
            if path.is_file() and path.stat().st_mtime <= cutoff:
                found.append(path)
        except FileNotFoundError:
            continue
    return found


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


def _named(path: Path, named: set[str]) -> bool:
    """Whether a row names *path*: a record's original or model cut-out, or a
    ``record_images`` file. Temp files (``.<id>...tmp``) never are."""
    if path.name.startswith("."):
        return False
    return path.name.partition(".")[2] in KINDS or path.name in named


def _id_of(path: Path) -> str:
    """The record id a file belongs to: ``<id>.original``, or a temp ``.<id>.original.x.tmp``."""
    return path.name.lstrip(".").split(".")[0]


def _lock(path: Path, *, blocking: bool) -> int | None:
    """An fd holding an exclusive flock on *path* (created if need be), or None if another
    open file holds it and *blocking* is false.

    After locking, the fd must still be the file at *path*: if the holder we waited for
    unlinked it meanwhile, we hold a lock nobody else can see, so we start again.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    while True:
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then release it."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
