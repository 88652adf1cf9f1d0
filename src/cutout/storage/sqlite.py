"""The embedded store: SQLite (WAL) for records, one file per image under ``images/``.

Layout under ``data_dir``::

    cutout.sqlite3            records (migrations/NNNN_*.sql), no image bytes
    images/<id>.original      the upload, written atomically (temp file + os.replace)
    images/<id>.processed     the cut-out
    locks/<id>.lock           held (flock) by the add that is writing <id>, gone after it

Concurrency: every operation opens its own short-lived connection (cheap for a local file),
so no connection is ever shared between threads or carried across a gunicorn fork. Writes
that check the per-user limit run in ``BEGIN IMMEDIATE`` transactions: SQLite lets one
writer in at a time, across threads *and* processes, so "count, then insert" cannot
interleave with another add. The busy timeout makes the others wait instead of failing.

All-or-nothing: images are written before the row, and removed again if the row cannot be
written. A crash between the two leaves files without a row; :meth:`SQLiteStore.sweep` removes
those: once when the store is first used, then periodically while the server runs
(:mod:`cutout.storage.sweeper`), in every worker.

**Why the sweep never takes a live add's files.** An add holds an exclusive ``flock`` on
``locks/<id>.lock`` from before its first byte is written until its row is committed (or its
files are removed again). The sweep deletes the files of an id only while holding that same
lock, and only if, once it holds it, the id still has no row. ``flock`` belongs to the open
file and the kernel drops it when the holder dies, so "I got the lock" proves that no live
process (any gunicorn worker, any thread) is still writing that id, however slow it is: no
clock is involved. Both sides check, after locking, that the lock file they hold is still the
one at that path (a finished add or a sweep unlinks it), the usual lock-file discipline.
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
    now_created_on,
)

log = logging.getLogger(__name__)

DB_NAME = "cutout.sqlite3"
IMAGES_DIR = "images"
LOCKS_DIR = "locks"
#: How long a writer waits for another one, seconds.
BUSY_TIMEOUT = 15.0
#: The sweep's default age guard. Zero: the per-add lock, not a file's age, says whether a
#: writer is alive (see the module docstring). Tests pass larger values to pick files.
ORPHAN_AGE = 0.0
_ID = re.compile(r"[0-9a-f]{24}")
_MIGRATION = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_COLUMNS = "id, user_id, image_name, created_on, engine, model, " + ", ".join(
    f"{k}_{f}" for k in KINDS for f in ("media_type", "size_bytes", "width", "height", "sha256")
)


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

    def add(self, record: NewRecord, *, limit: int) -> Record:
        record_id = secrets.token_hex(12)
        written: list[Path] = []
        with _storage_errors("store the record"):
            self._setup()
            with self._writing(record_id):
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

    def count(self, user_id: str) -> int:
        with self._connection("count the records") as conn:
            cursor = conn.execute("SELECT COUNT(*) FROM records WHERE user_id = ?", (user_id,))
            return int(cursor.fetchone()[0])

    def list(self, user_id: str) -> list[Record]:
        with self._connection("list the records") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM records WHERE user_id = ? "
                "ORDER BY created_on DESC, seq DESC",
                (user_id,),
            )
            return [_record(row) for row in rows]

    def get(self, user_id: str, record_id: str) -> Record:
        _check_id(record_id)
        with self._connection("read the record") as conn:
            cursor = conn.execute(
                f"SELECT {_COLUMNS} FROM records WHERE id = ? AND user_id = ?",
                (record_id, user_id),
            )
            return _record(_found(cursor.fetchone()))

    def rename(self, user_id: str, record_id: str, image_name: str) -> Record:
        _check_id(record_id)
        with self._connection("rename the record") as conn:
            cursor = conn.execute(
                f"UPDATE records SET image_name = ? WHERE id = ? AND user_id = ? "
                f"RETURNING {_COLUMNS}",
                (image_name, record_id, user_id),
            )
            # Read the row before the connection closes: that ends the statement and commits.
            return _record(_found(_only(cursor)))

    def delete(self, user_id: str, record_id: str) -> None:
        """Delete the row, then its files (a crash in between leaves files the sweep removes)."""
        _check_id(record_id)
        with self._connection("delete the record") as conn:
            cursor = conn.execute(
                "DELETE FROM records WHERE id = ? AND user_id = ? RETURNING id",
                (record_id, user_id),
            )
            _found(_only(cursor))
        _remove_files([self._image_path(record_id, kind) for kind in KINDS])

    def read_image(self, user_id: str, record_id: str, kind: Kind) -> tuple[ImageInfo, bytes]:
        record = self.get(user_id, record_id)
        info = record.original if kind == "original" else record.processed
        assert info is not None  # every SQLite row has both images
        with _storage_errors(f"read the {kind} image"):
            return info, self._image_path(record_id, kind).read_bytes()

    def ping(self) -> None:
        with self._connection("reach the database") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Nothing to release: connections live for one operation."""

    # -- recovery --------------------------------------------------------------------------

    def orphans(self, min_age: float = ORPHAN_AGE) -> builtins.list[Path]:
        """Image and temp files (older than *min_age* seconds) that no record refers to and
        no live add is writing (its lock is free). A snapshot: :meth:`sweep` re-checks."""
        with self._connection("look for orphaned images") as conn:
            found = []
            for record_id, paths in self._unclaimed(conn, min_age).items():
                with self._sweep_lock(record_id) as free:
                    if free:
                        found += paths
            return sorted(found)

    def sweep(self, min_age: float = ORPHAN_AGE) -> int:
        """Remove the files of adds that died, and of deletes cut short; return how many.

        Safe to run at any time, from any number of processes: see the module docstring.
        """
        with self._connection("remove orphaned images") as conn:
            return self._sweep(conn, min_age)

    # -- internals (tests patch _save_image and _insert_record to inject failures) ---------

    def _save_image(self, record_id: str, kind: Kind, data: bytes) -> Path:
        """Write *data* so the final name holds either nothing or all of it."""
        path = self._image_path(record_id, kind)
        fd, tmp = tempfile.mkstemp(dir=self.images_dir, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                half = len(data) // 2
                out.write(data[:half])
                if self._faults.active:  # a crash test stops the process mid-file here
                    out.flush()
                    self._faults.reached(f"write.{kind}.half")
                out.write(data[half:])
                out.flush()
                os.fsync(out.fileno())  # the row will vouch for these bytes: get them to disk
            os.replace(tmp, path)
        except BaseException:
            _remove_files([Path(tmp)])
            raise
        return path

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
                f"INSERT INTO records ({_COLUMNS}) VALUES ({', '.join('?' * 16)})",
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
    def _writing(self, record_id: str) -> Iterator[None]:
        """Hold *record_id*'s lock while an add writes it; the sweep leaves it alone meanwhile."""
        path = self.locks_dir / f"{record_id}.lock"
        fd = _lock(path, blocking=True)
        assert fd is not None
        try:
            yield
        finally:
            _unlock(path, fd)

    @contextmanager
    def _sweep_lock(self, record_id: str) -> Iterator[bool]:
        """Take *record_id*'s lock if no live add holds it; yield whether we got it."""
        path = self.locks_dir / f"{record_id}.lock"
        fd = _lock(path, blocking=False)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                _unlock(path, fd)

    def _unclaimed(
        self, conn: sqlite3.Connection, min_age: float
    ) -> dict[str, builtins.list[Path]]:
        """Files (older than *min_age*) by record id, for ids that have no row."""
        cutoff = time.time() - min_age
        by_id: dict[str, builtins.list[Path]] = {}
        for path in self.images_dir.iterdir():
            try:
                if not path.is_file() or path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:  # removed meanwhile (an add's temp file, a delete)
                continue
            by_id.setdefault(_id_of(path), []).append(path)
        if by_id:
            live = {row[0] for row in conn.execute("SELECT id FROM records")}
            by_id = {i: paths for i, paths in by_id.items() if i not in live}
        return by_id

    def _sweep(self, conn: sqlite3.Connection, min_age: float) -> int:
        removed = 0
        for record_id, _ in self._unclaimed(conn, min_age).items():
            with self._sweep_lock(record_id) as free:
                if not free:
                    continue  # a live add is writing it
                # Re-read under the lock: the add may have committed since we listed.
                row = conn.execute("SELECT 1 FROM records WHERE id = ?", (record_id,))
                if row.fetchone() is not None:
                    continue
                paths = self._files_of(record_id)
                _remove_files(paths)
                removed += len(paths)
        # Lock files of adds that died before writing anything (or after their row): taking
        # a free lock removes its file; a live add's lock is busy and stays.
        for lock in self.locks_dir.glob("*.lock"):
            with self._sweep_lock(lock.stem):
                pass
        return removed

    def _files_of(self, record_id: str) -> builtins.list[Path]:
        """Every file of *record_id* now: final images and temp files."""
        finals = [self._image_path(record_id, kind) for kind in KINDS]
        temps = self.images_dir.glob(f".{record_id}.*.tmp")
        return [p for p in [*finals, *temps] if p.exists()]

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
            self.locks_dir.mkdir(exist_ok=True)
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
    )


def _row_values(record: Record) -> list[str | int]:
    """*record* in the order of ``_COLUMNS``."""
    values: list[str | int] = [record.id, record.user_id, record.image_name, record.created_on,
                               record.engine, record.model]  # fmt: skip
    for info in (record.original, record.processed):
        assert info is not None  # new records always carry both images
        values += [info.media_type, info.size_bytes, info.width, info.height, info.sha256]
    return values


def _record(row: sqlite3.Row) -> Record:
    def info(kind: Kind) -> ImageInfo:
        return ImageInfo(
            media_type=row[f"{kind}_media_type"],
            size_bytes=row[f"{kind}_size_bytes"],
            width=row[f"{kind}_width"],
            height=row[f"{kind}_height"],
            sha256=row[f"{kind}_sha256"],
        )

    return Record(
        id=row["id"],
        user_id=row["user_id"],
        image_name=row["image_name"],
        created_on=row["created_on"],
        original=info("original"),
        processed=info("processed"),
        engine=row["engine"],
        model=row["model"],
    )
